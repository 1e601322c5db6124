"""Write the API twin (``workflows/api/<name>.api.json``) of UI workflows, converted the way the
web front end converts them (``harness.workflow_convert.ui_to_api``) against a real host's
/object_info. ``tests/comfy/test_workflows.py`` checks that every shipped pair agrees.

    .venv-comfy-newest/bin/python scripts/ui_to_api.py workflows/midms_flux2.json ...

The host: ``COMFYUI_PATH`` / ``COMFY_PYTHON``, else ``.comfyui/env.json`` (harness.host.find_host);
workflows with nodes the 2024 host lacks need a current one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.host import ComfyServer  # noqa: E402
from harness.workflow_convert import ui_to_api  # noqa: E402


def main(argv=None) -> int:
    paths = [Path(p) for p in (argv if argv is not None else sys.argv[1:])]
    if not paths:
        print(__doc__)
        return 2
    with ComfyServer(helpers=False) as server:
        info = server.object_info()
    for path in paths:
        prompt = ui_to_api(json.loads(path.read_text()), info)
        out = REPO / "workflows" / "api" / f"{path.stem}.api.json"
        out.write_text(json.dumps(prompt, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {out.relative_to(REPO)} ({len(prompt)} nodes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
