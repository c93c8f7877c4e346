"""`labbuilder graph`: the layout, the three formats, and the HTML page in a real headless browser."""

from __future__ import annotations

import html
import html.parser
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from labbuilder.present.graph import Box, layout, to_dot, to_html, to_mermaid
from labbuilder.spec.load import load
from labbuilder.spec.resolve import build_model
from tests.conftest import LABS

SHIPPED = sorted(p.stem for p in LABS.glob("*.yaml"))


def model(name: str):
    return build_model(load(str(LABS / f"{name}.yaml"))).lab


def inside(inner: Box, outer: Box) -> bool:
    return (
        outer.x <= inner.x
        and inner.x + inner.w <= outer.x + outer.w
        and outer.y <= inner.y
        and inner.y + inner.h <= outer.y + outer.h
    )


def overlap(a: Box, b: Box) -> bool:
    return a.x < b.x + b.w and b.x < a.x + a.w and a.y < b.y + b.h and b.y < a.y + a.h


@pytest.mark.parametrize("name", SHIPPED)
def test_every_node_and_pod_has_a_box_inside_its_node_and_nothing_overlaps(name):
    lab = model(name)
    picture = layout(lab)
    boxes = {b.key: b for layer in picture.layers for b in layer.boxes}
    nodes = [boxes[f"node:{n.name}"] for n in lab.nodes]
    for a in nodes:
        assert a.x >= 0 and a.x + a.w <= picture.width and a.y + a.h <= picture.height
        assert not any(overlap(a, b) for b in nodes if b is not a)
    for pod in lab.pods:
        assert inside(boxes[f"pod:{pod.ref}"], boxes[f"node:{pod.node}"]), pod.name
    services = [b for layer in picture.layers if layer.name == "services" for b in layer.boxes]
    assert len(services) == len(lab.services)
    assert all(not overlap(s, n) for s in services for n in nodes)
    assert all(s.y + s.h <= picture.height for s in services)


def test_each_service_draws_one_edge_per_distinct_endpoint():
    lab = model("kthw")
    layers = {layer.boxes[0].key: layer for layer in layout(lab).layers if layer.name == "services"}
    for svc in lab.services:
        distinct = {(e.ip, e.target) for eps in svc.endpoints.values() for e in eps}
        edges = [p for p in layers[f"service:{svc.ref}"].paths if p.cls == "endpoint"]
        assert len(edges) == len({ip for ip, _ in distinct}), svc.ref


class _Texts(html.parser.HTMLParser):
    """Text of the SVG <text> elements, and every attribute that could fetch something."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []
        self.fetching: list[str] = []
        self._in_text = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_text = tag == "text"
        if tag in ("script", "link", "img", "iframe", "object", "embed", "use", "image"):
            self.fetching.append(tag)
        self.fetching += [f"{tag} {k}" for k, _ in attrs if k in ("src", "href", "xlink:href")]

    def handle_endtag(self, tag: str) -> None:
        self._in_text = False

    def handle_data(self, data: str) -> None:
        if self._in_text:
            self.texts.append(data)


def shown(page: str) -> str:
    parser = _Texts()
    parser.feed(page)
    assert parser.fetching == [], f"the page fetches or runs something: {parser.fetching}"
    return "\n".join(parser.texts)


@pytest.mark.parametrize("name", SHIPPED)
def test_html_is_self_contained_and_names_every_node_pod_and_address(name):
    lab = model(name)
    page = to_html(lab)
    assert not re.search(r"url\(|@import|https?://(?!www\.w3\.org/2000/svg)", page)
    text = shown(page)
    for node in lab.nodes:
        assert node.name in text and str(node.ip) in text
        assert str(node.pod_cidr) in text if node.pod_cidr else True
    for pod in lab.pods:
        assert pod.name in text and str(pod.ip) in text and pod.host_veth in text
    for svc in lab.services:
        assert svc.ref in text and str(svc.cluster_ip) in text
    assert 'id="show-services"' in page and ".layer-services" in page


@pytest.mark.parametrize("name", SHIPPED)
def test_dot_and_mermaid_name_every_pod_and_are_well_formed(name, tmp_path: Path):
    lab = model(name)
    dot, mermaid = to_dot(lab), to_mermaid(lab)
    for pod in lab.pods:
        assert pod.name in dot and pod.name in mermaid and str(pod.ip) in dot
    assert dot.count("{") == dot.count("}")
    assert mermaid.startswith("flowchart TB\n")
    assert mermaid.count("subgraph ") == mermaid.count("\n  end") == len(lab.nodes)
    assert "svc_" not in to_dot(lab, services=False) and "svc_" not in to_mermaid(lab, services=False)
    if shutil.which("dot"):  # graphviz is a nice-to-have: when present, it must accept the file
        out = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        drawn = html.unescape(out.stdout)
        for pod in lab.pods:
            assert pod.name in drawn


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is missing on CI: the set-up must `apt-get install -y chromium`")
    pytest.skip("no chromium here (apt-get install -y chromium); under CI=true this fails instead")


def browse(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
        page.as_uri(),
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def test_the_page_loads_in_a_headless_browser_and_shows_every_node_and_pod(tmp_path: Path):
    lab = model("kthw")
    page = tmp_path / "kthw.html"
    page.write_text(to_html(lab))
    dom = browse(page, tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console  # no script errors, no failed loads reported to the console
    text = shown(dom.stdout)  # the DOM as the browser built it, not the file as written
    for node in lab.nodes:
        assert node.name in text
    for pod in lab.pods:
        assert pod.name in text and str(pod.ip) in text
    shot = tmp_path / "kthw.png"
    done = browse(page, tmp_path / "profile", "--window-size=1600,1000", f"--screenshot={shot}")
    assert done.returncode == 0 and shot.stat().st_size > 20_000, done.stderr[-2000:]


@pytest.mark.parametrize("name", SHIPPED)
def test_the_graph_draws_the_bridge_the_plan_builds(name):
    """The bridge box names what `plan` creates on the nodes (flannel: cni0, kthw: cnio0, kind: none)."""
    from labbuilder.compile.ops import Bridge
    from labbuilder.compile.plan import compile_plan

    lab = model(name)
    built = {op.name for key, op in compile_plan(lab).ops() if isinstance(op, Bridge) and key != "router"}
    drawn = {t.text.split()[0] for box in layout(lab).layers[0].boxes if box.cls == "bridge" for t in box.texts}
    assert drawn == built
    if name == "flannel":
        assert drawn == {"cni0"}


def test_policies_overlay_draws_the_allowed_edges():
    from labbuilder.compile.netpol.semantics import expected_matrix
    from labbuilder.present.graph import allowed_edges, render
    from labbuilder.spec.lab_file import resolve_file
    from tests.conftest import ROOT

    lab = resolve_file(str(ROOT / "tests/integration/labs/kr-bridge.yaml"))[1].lab
    table = expected_matrix(lab, 80, "TCP")
    edges = {(a.ref, b.ref) for a, b in allowed_edges(lab, (80, "TCP"))}
    names = {p.ref.split("-")[0]: p.ref for p in lab.pods}  # x/a → x/a-<hash>-<hash>
    want = {(names[f], names[t]) for f in table.froms for t in table.tos if f != t and table.mark(f, t) == "."}
    assert edges == want and (names["y/a"], names["x/b"]) in edges and (names["y/a"], names["x/a"]) not in edges
    dot = render(lab, "dot", policies=(80, "TCP"))
    assert dot.count('color="#2e7d32"') == len(edges)
    assert 'class="allowed"' in render(lab, "html", policies=(80, "TCP"))
    assert 'class="allowed"' not in render(lab, "html") and "==>" not in render(lab, "mermaid")
