"""tritonserver for the local stack, from the nvidia-pytriton wheel.

The wheel (0.7.0) ships tritonserver 2.51 with the Python backend, one Python
backend stub per CPython version, and no ONNX Runtime backend. This module
builds a backend directory in ``<state_dir>/triton/backends/``:

- ``python/``: the wheel's ``libtriton_python.so`` and
  ``triton_python_backend_utils.py``, and the stub for the running interpreter;
- ``onnxruntime/model.py``: ECRS's Python-based ONNX Runtime backend, so that
  models whose config.pbtxt sets ``backend: "onnxruntime"`` run here unchanged.

The files are copied again at every start (about 3 MB). Next to it,
``<state_dir>/triton/python-env/`` is the virtual environment that the stub
runs in (see ``build_python_env``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import secrets
import shutil
import sys
import sysconfig
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from ecrs.config import StackConfig
from ecrs.errors import StackError
from ecrs.serving.stub_watchdog import TRITON_URL_ENV
from ecrs.stack.processes import ServerSpec

NAME = "triton"
# Loading the Python backend and the models takes seconds; each ONNX model adds
# its session creation.
READY_TIMEOUT_S = 120.0
PROBE_TIMEOUT_S = 1.0
ONNX_BACKEND = Path(__file__).parent / "backends" / "onnxruntime" / "model.py"
SHM_DIR = Path("/dev/shm")
SHM_PREFIX_OPTION = "shm-region-prefix-name="


def pytriton_server_dir() -> Path:
    """Return the wheel's ``pytriton/tritonserver`` folder."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise StackError(
            "the nvidia-pytriton package (tritonserver 2.51) is not installed; "
            "install the local extra: pip install 'ecrs[local]'"
        )
    server_dir = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    if not (server_dir / "bin" / "tritonserver").is_file():
        raise StackError(
            f"no tritonserver binary under {server_dir}; reinstall nvidia-pytriton"
        )
    return server_dir


def pytriton_libs_dir(server_dir: Path) -> Path:
    """Return the wheel's ``nvidia_pytriton.libs`` folder (tritonserver's libraries)."""
    return server_dir.parent.parent / "nvidia_pytriton.libs"


def check_shared_libpython() -> Path:
    """Return the folder of the interpreter's shared libpython, or raise.

    The Python backend stub embeds CPython through ``libpython3.X.so``, so the
    interpreter running ECRS must have been built with ``--enable-shared``.
    """
    libdir = Path(sysconfig.get_config_var("LIBDIR") or "")
    library = sysconfig.get_config_var("LDLIBRARY") or ""
    shared = sysconfig.get_config_var("Py_ENABLE_SHARED")
    if not shared or not (libdir / library).exists():
        raise StackError(
            f"Python {sys.version.split()[0]} at {sys.executable} has no shared "
            f"libpython (Py_ENABLE_SHARED={shared}, looked for {libdir / library}), "
            "which the Triton Python backend stub needs; use a Python built with "
            "--enable-shared (pyenv: PYTHON_CONFIGURE_OPTS=--enable-shared pyenv "
            "install 3.11), or Debian's python3.11 with libpython3.11"
        )
    return libdir


def check_numpy_for_stub() -> None:
    """Raise unless the numpy that the stub will import is older than 2.

    The stub reads numpy arrays through numpy 1's C layout. Measured with
    numpy 2.4.6 and tritonserver 2.51: every output tensor of a Python model
    reached Triton with 0 bytes ("output tensor shape does not match size of
    output").
    """
    version = importlib.metadata.version("numpy")
    if int(version.split(".")[0]) >= 2:
        raise StackError(
            f"numpy {version} is installed for {sys.executable}, but the Triton "
            "2.51 Python backend stub works only with numpy 1 (with numpy 2 it "
            "returns empty output tensors); install numpy<2 in this environment "
            "(pip install 'numpy<2')"
        )


def build_backend_dir(server_dir: Path, backends_dir: Path) -> Path:
    """Copy the Python backend, its stub and the ONNX backend into ``backends_dir``.

    Copies, not symbolic links: Triton 2.51 rejects a backend library whose real
    path "escapes backend directory".
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server_dir / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise StackError(
            f"nvidia-pytriton has no Python backend stub for Python {version} "
            f"(no {stub}); use a Python version it ships a stub for"
        )
    python_backend = server_dir / "backends" / "python"
    sources = {
        Path("python", name): python_backend / name
        for name in ("libtriton_python.so", "triton_python_backend_utils.py")
    }
    sources[Path("python", "triton_python_backend_stub")] = stub
    sources[Path("onnxruntime", "model.py")] = ONNX_BACKEND
    for relative, source in sources.items():
        target = backends_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        shutil.copy2(source, target)
    return backends_dir


def build_python_env(env_dir: Path, python_paths: Sequence[Path]) -> Path:
    """Create the virtual environment that the Python backend stub runs in.

    The stub of tritonserver 2.51 starts CPython in isolated mode
    (``PyConfig_InitIsolatedConfig``), so it ignores ``PYTHONPATH`` and finds
    its prefix by searching ``PATH`` for ``python3``. Measured: started from a
    venv, the stub imported the base interpreter's site-packages, not the
    venv's. This folder is a venv whose ``bin/python3`` links to the running
    interpreter and whose site-packages hold one ``.pth`` file. That file adds
    the running interpreter's site-packages (processing their own ``.pth``
    files, as for editable installs) and then ``python_paths``. Putting
    ``bin/`` first on tritonserver's ``PATH`` makes the stub use this venv.
    Returns ``bin/``.
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    bin_dir = env_dir / "bin"
    site_dir = env_dir / "lib" / f"python{version}" / "site-packages"
    bin_dir.mkdir(parents=True, exist_ok=True)
    site_dir.mkdir(parents=True, exist_ok=True)
    for name in ("python3", f"python{version}"):
        link = bin_dir / name
        link.unlink(missing_ok=True)
        link.symlink_to(sys.executable)
    base_bin = sysconfig.get_config_var("BINDIR") or str(Path(sys.base_prefix) / "bin")
    (env_dir / "pyvenv.cfg").write_text(
        f"home = {base_bin}\n"
        "include-system-site-packages = false\n"
        f"version = {platform.python_version()}\n"
    )
    paths = sysconfig.get_paths()
    site_packages = dict.fromkeys([paths["purelib"], paths["platlib"]])
    lines = [f"import site; site.addsitedir({path!r})" for path in site_packages]
    lines += [str(Path(path).resolve()) for path in python_paths]
    (site_dir / "ecrs-stack.pth").write_text("\n".join(lines) + "\n")
    return bin_dir


def triton_env(
    config: StackConfig, server_dir: Path, python_bin: Path
) -> dict[str, str]:
    """Return tritonserver's environment.

    ``LD_LIBRARY_PATH`` puts the running interpreter's libpython first, ahead
    of any system libpython3.X of another patch release, then the wheel's
    libraries. ``PATH`` starts with ``python_bin`` from ``build_python_env``.
    ``PYTHONPATH`` is dropped because the stub ignores it (``triton_spec``
    passes its entries to ``build_python_env`` instead). The store addresses
    come from ``config.stores``.
    """
    library_path = [
        str(check_shared_libpython()),
        str(pytriton_libs_dir(server_dir)),
        os.environ.get("LD_LIBRARY_PATH", ""),
    ]
    env = {
        **os.environ,
        "LD_LIBRARY_PATH": os.pathsep.join(part for part in library_path if part),
        "PATH": os.pathsep.join([str(python_bin), os.environ.get("PATH", "")]),
        **config.stores.to_env(),
        # The stub watchdog of the served models reloads a model through it.
        TRITON_URL_ENV: config.triton_grpc_url,
    }
    env.pop("PYTHONPATH", None)
    return env


def triton_command(
    config: StackConfig, server_dir: Path, backends_dir: Path
) -> list[str]:
    host, ports = config.host, config.ports
    # The Python backend names its shared-memory regions with this prefix, so
    # two tritonservers on one machine need different prefixes.
    prefix = f"ecrs{ports.triton_grpc}-{secrets.token_hex(4)}-"
    return [
        str(server_dir / "bin" / "tritonserver"),
        f"--model-repository={config.model_repository}",
        f"--backend-directory={backends_dir}",
        f"--backend-config=python,{SHM_PREFIX_OPTION}{prefix}",
        "--model-control-mode=explicit",
        "--load-model=*",
        "--strict-readiness=true",
        f"--grpc-address={host}",
        f"--grpc-port={ports.triton_grpc}",
        f"--http-address={host}",
        f"--http-port={ports.triton_http}",
        f"--metrics-address={host}",
        f"--metrics-port={ports.triton_metrics}",
        "--log-verbose=0",
        *config.triton_args,
    ]


def shm_prefix(command: Sequence[str]) -> str | None:
    """Return the shared-memory prefix in a tritonserver command line."""
    for argument in command:
        _, found, value = argument.partition(SHM_PREFIX_OPTION)
        if found:
            return value
    return None


def remove_shm_regions(command: Sequence[str], shm_dir: Path = SHM_DIR) -> list[str]:
    """Delete the shared-memory files of a stopped tritonserver; return their names.

    The Python backend removes a stub's region when the stub exits cleanly.
    A stub killed with SIGKILL leaves its 1 MiB region in ``/dev/shm``
    (measured with Triton 2.51), so they would pile up over restarts.
    """
    prefix = shm_prefix(command)
    if not prefix:
        return []
    removed = []
    for path in shm_dir.glob(f"{prefix}*"):
        path.unlink(missing_ok=True)
        removed.append(path.name)
    return removed


def triton_is_ready(host: str, http_port: int) -> bool:
    """Return whether ``/v2/health/ready`` returns status 200.

    With ``--strict-readiness``, it does once the server and every model are ready.
    """
    # An opener without proxy handlers, so no http_proxy setting can send this
    # request off the machine.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    url = f"http://{host}:{http_port}/v2/health/ready"
    try:
        with opener.open(url, timeout=PROBE_TIMEOUT_S) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def triton_spec(
    config: StackConfig,
    *,
    python_paths: Sequence[Path] = (),
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> ServerSpec:
    server_dir = pytriton_server_dir()
    check_numpy_for_stub()
    triton_dir = config.state_dir / NAME
    backends_dir = build_backend_dir(server_dir, triton_dir / "backends")
    inherited = [
        Path(path)
        for path in os.environ.get("PYTHONPATH", "").split(os.pathsep)
        if path
    ]
    python_bin = build_python_env(
        triton_dir / "python-env", [*inherited, *python_paths]
    )
    config.model_repository.mkdir(parents=True, exist_ok=True)
    host, ports = config.host, config.ports
    return ServerSpec(
        name=NAME,
        command=tuple(triton_command(config, server_dir, backends_dir)),
        env=triton_env(config, server_dir, python_bin),
        cwd=triton_dir,
        log_path=config.logs_dir / f"{NAME}.log",
        ports={
            "grpc": ports.triton_grpc,
            "http": ports.triton_http,
            "metrics": ports.triton_metrics,
        },
        port_checks={
            "grpc": (host, ports.triton_grpc),
            "http": (host, ports.triton_http),
            "metrics": (host, ports.triton_metrics),
        },
        probe=lambda: triton_is_ready(host, ports.triton_http),
        ready_timeout_s=ready_timeout_s,
    )
