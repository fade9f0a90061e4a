"""Shared printing for ``micronet bench train|eval|epoch``: machine line, chosen mode, ratio table."""

from __future__ import annotations

import json

__all__ = ["print_result", "add_machine_options"]


def print_result(result: dict, *, title: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
        return
    m = result["machine"]
    flags = " ".join(f for f, on in m["flags"].items() if on) or "none of the listed"
    alloc = m["allocator"]
    print(f"{title}")
    print(f"  machine: {m['cpu']}, {m['threads']} thread(s), torch {m['torch']}, device {m['device']}"
          + (f" ({m['gpu']})" if "gpu" in m else ""))
    print(f"  CPU flags: {flags}; native bf16: {m['bf16_native']}")
    print(f"  allocator: {alloc.get('allocator')} ({alloc.get('note')}); load average: {m.get('load_average')}")
    if "norm_kernel" in m:
        print(f"  BatchNorm + hard-swish in channels-last training: {m['norm_kernel']}")
    print(f"  chosen mode (auto): {result['chosen']} [{result['chosen_source']}]")
    prepared = result.get("prepared", {})
    for name, ips in result["images_per_s"].items():
        how = prepared.get(name)
        note = (f"   (BN {'folded' if how['bn_folded'] else 'not folded'}, {how['activations_fused']} conv+hardswish fused)"
                if how else "")
        print(f"  {name:<22s} {ips:>9.1f} img/s   {result['ratio_vs_authors'][name]:>5.2f}x authors-style{note}")


def add_machine_options(parser) -> None:
    """--threads, --device, --json: the options every bench target shares."""
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu (default) | cuda | auto")
    parser.add_argument("--json", action="store_true", help="print the whole result as JSON")
