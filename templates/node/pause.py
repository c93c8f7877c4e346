"""Writes `pause.x86_64`, the node image's `/pause` on x86-64: `python3 pause.py > pause.x86_64`.

A pod's sandbox process only has to exist and wait: Kubernetes' pause is a static C program that
loops on pause(2). The node image has no compiler and Debian ships no static pause, and a copy
of coreutils `sleep` costs each pod ≈140 KB of its own (relocated libc pages and page tables)
where this program costs ≈36 KB — a tenth of a megabyte per pod. So the program is written out
here, byte by byte: an ELF header, one loadable segment (this file's bytes, read and execute), a
non-executable stack, and nine bytes of code. It ignores its arguments (`/pause infinity`, as the
`sleep` copy needs them, stays what `ps` shows); a signal's default action ends it. Other
machines keep the `sleep` copy (templates/node/Dockerfile, engine/image.py).
"""

from __future__ import annotations

import struct
import sys

BASE = 0x400000  # where the file is mapped, as linkers place a static executable
CODE = bytes.fromhex(
    "b8 22 00 00 00"  # mov eax, 34      ; pause(2) on x86-64
    "0f 05"  # syscall                     ; returns only when a signal was handled
    "eb f7"  # jmp -9                      ; and wait again
)
EHSIZE, PHSIZE = 64, 56
PT_LOAD, PT_GNU_STACK = 1, 0x6474E551
PF_X, PF_W, PF_R = 1, 2, 4


def pause_elf() -> bytes:
    segments = 2
    entry = BASE + EHSIZE + PHSIZE * segments
    size = EHSIZE + PHSIZE * segments + len(CODE)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # 64-bit, little-endian, version 1, System V
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH",
        2,  # e_type: an executable
        0x3E,  # e_machine: x86-64
        1,  # e_version
        entry,
        EHSIZE,  # e_phoff: the program headers follow this header
        0,  # e_shoff: no section headers (nothing to link or debug)
        0,  # e_flags
        EHSIZE,
        PHSIZE,
        segments,
        0,  # e_shentsize
        0,  # e_shnum
        0,  # e_shstrndx
    )
    load = struct.pack("<IIQQQQQQ", PT_LOAD, PF_R | PF_X, 0, BASE, BASE, size, size, 0x1000)
    stack = struct.pack("<IIQQQQQQ", PT_GNU_STACK, PF_R | PF_W, 0, 0, 0, 0, 0, 16)
    return header + load + stack + CODE


if __name__ == "__main__":
    sys.stdout.buffer.write(pause_elf())
