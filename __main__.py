"""``python -m orbitforge <command>``: demo, check-workflow, convert-hi3d."""

from __future__ import annotations

import sys

USAGE = """usage: python -m orbitforge <command> [args]

commands:
  demo [--out DIR] [--iters N]   reconstruct the bundled spot orbit into Gaussians (PLY), renders
                                 and a mesh (GLB), on the CPU
  check-workflow FILE [FILE...]  validate ComfyUI workflow files against OrbitForge's nodes
  convert-hi3d IN OUT            convert Hi3D's stage-2 checkpoint (.pt) to safetensors
"""


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "demo":
        from .demo import main as run
    elif cmd == "check-workflow":
        from .workflow_tools.cli import check_workflow_main as run
    elif cmd == "convert-hi3d":
        from .kernels.diffusion.hi3d_checkpoint import convert_main as run
    else:
        print(f"unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return int(run(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
