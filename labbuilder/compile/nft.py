"""nftables tables as plain data: build one, write it as an `nft -f` transaction, read `nft list` back.

Rules are kept in the words their author writes them (kube-proxy's, through knftables), so a
table renders as the very transaction kube-proxy sends and unit tests pin it against upstream's
expected dumps. `nft list table` prints every rule in nft's canonical words instead (`mark set
mark or 0x4000` comes back as `meta mark set meta mark | 0x00004000`), and map elements in hash
order: `canonical` maps written rules to the listed ones, and `listed` turns a table and a
listing into the same comparable form, so a node's table and the planned one compare equal when
the kernel holds what the plan wrote, and differ as soon as anyone changed a rule or an element.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, summarize_address_range

# Rules whose listed form differs from their written form, as nft 1.0 prints them.
_REWRITES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bmark set mark or (0x[0-9a-f]+)"), "meta mark set meta mark | {0}"),
    (re.compile(r"\bmark set mark xor (0x[0-9a-f]+)"), "meta mark set meta mark ^ {0}"),
    (re.compile(r"\bmark and (0x[0-9a-f]+) == 0\b"), "meta mark & {0} == 0x00000000"),
)
_ANON_SET = re.compile(r"((?:daddr|saddr)(?: !=)? )\{ ([^{}:]+?) \}")  # addresses: `ip saddr != { a , b }`
_VMAP = re.compile(r"vmap \{ (.+?) \}")


@dataclass(frozen=True)
class Element:
    key: str  # "10.32.0.10 . udp . 53"
    value: str = ""  # a map's verdict: "goto service-…"; "" in a set
    comment: str = ""

    def written(self) -> str:
        comment = f' comment "{self.comment}"' if self.comment else ""
        return f"{self.key}{comment}" + (f" : {self.value}" if self.value else "")


@dataclass
class Container:
    """A named set or map of the table."""

    kind: str  # "set" or "map"
    name: str
    type: str  # "ipv4_addr", "inet_proto . inet_service : verdict"
    comment: str = ""
    flags: str = ""  # "dynamic,timeout"
    timeout: int | None = None  # seconds
    elements: list[Element] = field(default_factory=list)

    @property
    def dynamic(self) -> bool:
        """Filled by the packets themselves (affinity): its elements are not the plan's."""
        return "dynamic" in self.flags


@dataclass(frozen=True)
class Hook:
    """A base chain: where it hooks, written as kube-proxy writes it and listed as nft prints it."""

    type: str  # filter, nat
    hook: str  # prerouting, input, forward, output, postrouting
    priority: int

    def written(self) -> str:
        return f"type {self.type} hook {self.hook} priority {self.priority} ;"

    def listed(self) -> str:
        return f"type {self.type} hook {self.hook} priority {_priority_name(self.hook, self.priority)}; policy accept;"


def _priority_name(hook: str, priority: int) -> str:
    """nft names standard priorities (and offsets from them) where the family and hook know them."""
    names = {"filter": 0}
    if hook == "prerouting":
        names["dstnat"] = -100
    if hook == "postrouting":
        names["srcnat"] = 100
    for name, value in names.items():
        if priority == value:
            return name
        if abs(priority - value) <= 10:
            return f"{name} {'+' if priority > value else '-'} {abs(priority - value)}"
    return str(priority)


@dataclass
class Chain:
    name: str
    hook: Hook | None = None
    comment: str = ""
    rules: list[str] = field(default_factory=list)


@dataclass
class NftTable:
    family: str
    name: str
    comment: str = ""
    containers: dict[str, Container] = field(default_factory=dict)
    chains: dict[str, Chain] = field(default_factory=dict)

    def container(self, kind: str, name: str, type_: str, **options: object) -> Container:
        found = self.containers.setdefault(name, Container(kind, name, type_, **options))  # type: ignore[arg-type]
        return found

    def chain(self, name: str, hook: Hook | None = None, comment: str = "") -> Chain:
        return self.chains.setdefault(name, Chain(name, hook, comment))

    def add(self, chain: str, rule: str) -> None:
        self.chain(chain).rules.append(rule)

    def element(self, container: str, key: str, value: str = "", comment: str = "") -> None:
        self.containers[container].elements.append(Element(key, value, comment))

    @property
    def where(self) -> str:
        return f"{self.family} {self.name}"


# -- writing: the transaction ------------------------------------------------------------------
def transaction(table: NftTable) -> list[str]:
    """The table as knftables writes it: objects first (sets, maps, chains), then rules, then
    elements, each line one `add` command; `nft -f` runs them as one transaction."""
    where = table.where
    lines = [f'add table {where} {{ comment "{table.comment}" ; }}' if table.comment else f"add table {where}"]
    for c in table.containers.values():
        options = [f"type {c.type}"]
        options += [f"flags {c.flags}"] if c.flags else []
        options += [f"timeout {c.timeout}s"] if c.timeout is not None else []
        options += [f'comment "{c.comment}"'] if c.comment else []
        lines.append(f"add {c.kind} {where} {c.name} {{ {' ; '.join(options)} ; }}")
    for ch in table.chains.values():
        options = [ch.hook.written().rstrip(" ;")] if ch.hook else []
        options += [f'comment "{ch.comment}"'] if ch.comment else []
        lines.append(f"add chain {where} {ch.name}" + (f" {{ {' ; '.join(options)} ; }}" if options else ""))
    for ch in table.chains.values():
        lines += [f"add rule {where} {ch.name} {rule}" for rule in ch.rules]
    for c in table.containers.values():
        lines += [f"add element {where} {c.name} {{ {e.written()} }}" for e in c.elements]
    return lines


def payload(table: NftTable, extra: Sequence[str] = ()) -> str:
    """An `nft -f` file that replaces the whole table atomically: made (so that deleting it cannot
    fail), deleted, written anew — one transaction, as iptables-restore replaces a table."""
    head = [f"add table {table.where}", f"delete table {table.where}"]
    return "\n".join([*head, *transaction(table), *extra]) + "\n"


# -- reading: the listing ----------------------------------------------------------------------
def canonical(rule: str) -> str:
    """A written rule as `nft list` prints it."""
    for pattern, form in _REWRITES:
        rule = pattern.sub(_hex(form), rule)
    rule = _VMAP.sub(lambda m: "vmap { " + m.group(1).replace(" , ", ", ") + " }", rule)

    def anon(m: re.Match[str]) -> str:
        items = [item.strip() for item in m.group(2).split(",")]
        if len(items) == 1:
            return m.group(1) + items[0]
        return m.group(1) + "{ " + ", ".join(_merged(items)) + " }"

    return _ANON_SET.sub(anon, rule)


def _merged(items: list[str]) -> list[str]:
    """An anonymous interval set as nft keeps it: overlapping and adjacent members merged, in
    address order, each a prefix where it is one (a bare address for a /32), else a range."""
    try:
        spans = sorted((int(n.network_address), int(n.broadcast_address)) for n in map(IPv4Network, items))
    except ValueError:
        return items
    merged: list[list[int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out = []
    for start, end in merged:
        nets = list(summarize_address_range(IPv4Address(start), IPv4Address(end)))
        if len(nets) == 1:
            net = nets[0]
            out.append(str(net.network_address) if net.prefixlen == 32 else str(net))
        else:
            out.append(f"{IPv4Address(start)}-{IPv4Address(end)}")
    return out


def _hex(form: str) -> Callable[[re.Match[str]], str]:
    """A replacement that writes the matched mark as nft prints a 32-bit value."""
    return lambda m: form.format(f"0x{int(m.group(1), 16):08x}")


@dataclass(frozen=True)
class Listed:
    """A table in comparable form: what `nft list table` shows, element order and the dynamic
    sets' own elements aside."""

    comment: str
    containers: dict[str, tuple[str, str, str, str, str, frozenset[str]]]
    chains: dict[str, tuple[str, str, tuple[str, ...]]]


def listed(table: NftTable) -> Listed:
    """The planned table as `nft list table` will show it."""
    return Listed(
        table.comment,
        {
            c.name: (
                c.kind,
                c.type,
                c.flags,
                _duration(c.timeout) if c.timeout is not None else "",
                c.comment,
                frozenset() if c.dynamic else frozenset(_element_listed(e) for e in c.elements),
            )
            for c in table.containers.values()
        },
        {
            ch.name: (ch.hook.listed() if ch.hook else "", ch.comment, tuple(canonical(r) for r in ch.rules))
            for ch in table.chains.values()
        },
    )


def _element_listed(e: Element) -> str:
    return e.written()


def _duration(seconds: int) -> str:
    """nft's time format: 10800 → 3h, 90 → 1m30s."""
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out += f"{seconds // size}{unit}"
            seconds %= size
    return out or "0s"


_BLOCK = re.compile(r"^\s*(set|map|chain) (\S+) \{\s*$")


def parse_listing(text: str) -> Listed | None:
    """`nft list table` output → the comparable form; None when no table is listed."""
    lines = text.splitlines()
    if not any(line.startswith("table ") for line in lines):
        return None
    comment = ""
    containers: dict[str, tuple[str, str, str, str, str, frozenset[str]]] = {}
    chains: dict[str, tuple[str, str, tuple[str, ...]]] = {}
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        block = _BLOCK.match(lines[i])
        if block is None:
            if line.startswith("comment ") and not chains and not containers:
                comment = _unquote(line[len("comment ") :])
            i += 1
            continue
        kind, name = block.groups()
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != "}":
            body.append(lines[i].strip())
            i += 1
        i += 1
        if kind == "chain":
            chains[name] = _chain(body)
        else:
            containers[name] = _container(kind, body)
    return Listed(comment, containers, chains)


def _unquote(text: str) -> str:
    return text.strip().removeprefix('"').removesuffix('"')


def _chain(body: list[str]) -> tuple[str, str, tuple[str, ...]]:
    hook, comment, rules = "", "", list[str]()
    for line in body:
        if line.startswith("type "):
            hook = line
        elif line.startswith("comment ") and not rules:
            comment = _unquote(line[len("comment ") :])
        elif line:
            rules.append(line)
    return hook, comment, tuple(rules)


def _container(kind: str, body: list[str]) -> tuple[str, str, str, str, str, frozenset[str]]:
    fields = {"type": "", "flags": "", "timeout": "", "comment": ""}
    elements: list[str] = []
    text = ""
    for line in body:
        word, _, rest = line.partition(" ")
        if text or word == "elements":
            text += " " + line
        elif word in fields:
            fields[word] = _unquote(rest) if word == "comment" else rest
    if text:
        inside = text.split("{", 1)[1].rsplit("}", 1)[0]
        elements = [item.strip() for item in _split_top(inside) if item.strip()]
    dynamic = "dynamic" in fields["flags"]
    return (
        kind,
        fields["type"],
        fields["flags"],
        fields["timeout"],
        fields["comment"],
        frozenset() if dynamic else frozenset(elements),
    )


def _split_top(text: str) -> list[str]:
    """Split on commas outside quotes (an element's comment may hold anything but a quote)."""
    out, current, quoted = [], "", False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            out.append(current)
            current = ""
        else:
            current += char
    return [*out, current]


def differences(want: Listed, have: Listed | None) -> list[tuple[str, str]]:
    """What differs, as (what, change): ("chain services", "changed"), ("map service-ips element
    10.32.0.2 . tcp . 80 : goto service-…", "missing"), ("table", "missing")."""
    if have is None:
        return [("table", "missing")]
    out = []
    for name in sorted(set(want.chains) | set(have.chains)):
        if name not in have.chains:
            out.append((f"chain {name}", "missing"))
        elif name not in want.chains:
            out.append((f"chain {name}", "added"))
        elif want.chains[name] != have.chains[name]:
            out.append((f"chain {name}", "changed"))
    for name in sorted(set(want.containers) | set(have.containers)):
        kind = (want.containers.get(name) or have.containers[name])[0]
        if name not in have.containers:
            out.append((f"{kind} {name}", "missing"))
        elif name not in want.containers:
            out.append((f"{kind} {name}", "added"))
        elif want.containers[name][:5] != have.containers[name][:5]:
            out.append((f"{kind} {name}", "changed"))
        else:
            w, h = want.containers[name][5], have.containers[name][5]
            out += [(f"{kind} {name} element {e}", "missing") for e in sorted(w - h)]
            out += [(f"{kind} {name} element {e}", "added") for e in sorted(h - w)]
    if want.comment != have.comment:
        out.append(("table comment", "changed"))
    return out


_ADD = re.compile(r"^add (table|set|map|chain|rule|element) (\S+) (\S+)(?: (.*))?$")


def parse_transaction(text: str) -> NftTable | None:
    """The table a `transaction` (or `payload`) builds, read back from its lines; None if none.
    A `delete table` forgets what came before it, as nft does."""
    table: NftTable | None = None
    for line in text.splitlines():
        if line.startswith("delete table "):
            table = None
            continue
        found = _ADD.match(line.strip())
        if not found:
            continue
        what, family, name, rest = found.groups()
        rest = rest or ""
        if what == "table":
            table = table or NftTable(family, name, _option(rest, "comment"))
            continue
        if table is None:
            continue
        obj, _, spec = rest.partition(" ")
        if what in ("set", "map"):
            timeout = _option(spec, "timeout")
            table.container(
                what,
                obj,
                _option(spec, "type"),
                comment=_option(spec, "comment"),
                flags=_option(spec, "flags"),
                timeout=int(timeout.rstrip("s")) if timeout else None,
            )
        elif what == "chain":
            hook = re.search(r"type (\w+) hook (\w+) priority (-?\d+)", spec)
            table.chain(obj, Hook(hook[1], hook[2], int(hook[3])) if hook else None, _option(spec, "comment"))
        elif what == "rule":
            table.add(obj, spec)
        elif obj in table.containers:
            table.containers[obj].elements.append(_element(spec.strip().removeprefix("{").removesuffix("}").strip()))
    return table


def _option(spec: str, name: str) -> str:
    """`type ipv4_addr ; comment "x y" ;` → the value of `name`."""
    found = re.search(rf'\b{name} ("[^"]*"|[^;{{}}]+?) ;', spec)
    return _unquote(found[1]) if found else ""


def _element(text: str) -> Element:
    if ' comment "' in text:
        key, _, rest = text.partition(' comment "')
        comment, _, value = rest.partition('"')
        return Element(key.strip(), value.strip().removeprefix(":").strip(), comment)
    key, _, value = text.partition(" : ")
    return Element(key.strip(), value.strip())
