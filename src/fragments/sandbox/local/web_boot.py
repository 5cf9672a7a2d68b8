"""The Python web templates' launchers, run by the template's Python inside the sandbox.

Kept as strings (written once under the sandbox root, bound read-only at /opt/fragments/) because
they import Streamlit or Gradio, which exist only in the template environment.

Streamlit: `streamlit run` after importing the template's usual libraries (numpy, pandas,
matplotlib: paid while the pool fills, not by the app's first run), with two fixes. Streamlit
binds its listening socket itself with `socket.socket(family)`, i.e. protocol 0, so asyncio
does not recognise the accepted connections as TCP and never sets TCP_NODELAY on them: every
response after the first on a kept-alive connection then waits ~40 ms for the client's delayed
ACK (Nagle), which made a page load (~60 static files over 6 connections) and each WebSocket
message of a script run slow. The launcher re-wraps the listening socket so its protocol is
read from the kernel (TCP). And each script run ended with Streamlit's file watcher resolving
and matching every loaded module against its blacklist's globs (~0.1 s of CPU per run, before
the run counts as done); it now looks only at modules loaded from the app's own folder.

Gradio: `import gradio` is most of a cold start (~4.5 s), so a warm slot is a process that has
imported it (and the template's usual libraries) and already serves a placeholder app in
Gradio's reload mode (what `gradio app.py` sets up). Writing the owner's app over the
placeholder is then an edit like any later one: Gradio's own watcher re-runs the file and swaps
the new app into the running server, and an open page reloads itself; no process starts. The
launcher prints RELOADED_MARK or RELOAD_FAILED_MARK after each reload so the app side can wait
for the new code to be live (and report its traceback if it failed).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from fragments.sandbox.templates.runtimes import GRADIO_BOOT, STREAMLIT_BOOT

BOOT_DIR = "/opt/fragments"
# Printed by the Gradio launcher after each reload of the app's file (see the docstring).
RELOADED_MARK = "FRAGMENTS_RELOADED"
RELOAD_FAILED_MARK = "FRAGMENTS_RELOAD_FAILED"
STREAMLIT_BOOT_SOURCE = '''\
"""Fragments sandbox: `streamlit run`, with TCP_NODELAY on its connections."""
import importlib
import os
import socket
import sys

if sys.path and sys.path[0] == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

# Streamlit internals: if they move, the launcher runs Streamlit unchanged.
try:
    from streamlit.web.server.starlette import starlette_server

    _bind_socket = starlette_server._bind_socket

    def _tcp_bind_socket(address, port, backlog):
        # A socket object made from the fd reads its protocol (TCP) from the kernel; accepted
        # connections inherit it and asyncio then turns Nagle off on them.
        sock = _bind_socket(address, port, backlog)
        tcp = socket.socket(fileno=sock.detach())
        tcp.setblocking(False)
        tcp.set_inheritable(True)
        return tcp

    starlette_server._bind_socket = _tcp_bind_socket
except (ImportError, AttributeError):
    pass

try:
    from streamlit.watcher import local_sources_watcher as _sources

    def _update_watched_modules(self):
        # Streamlit resolves the paths of every loaded module (~1,700) and matches them against
        # its blacklist's globs after each script run (~0.1 s of CPU): only modules from the
        # app's own folder can change here (packages are read-only), so only those are looked at.
        if self._is_closed or set(sys.modules) == self._cached_sys_modules:
            return
        self._cached_sys_modules = set(sys.modules)
        prefix = os.path.join(self._script_folder, "")
        local = {}
        for name, module in dict(sys.modules).items():
            spec = getattr(module, "__spec__", None)
            places = (getattr(module, "__file__", None), getattr(spec, "origin", None))
            if any(isinstance(p, str) and p.startswith(prefix) for p in places):
                paths = _sources.get_module_paths(module)
                local[name] = self._exclude_blacklisted_paths(paths)
        self._register_necessary_watchers(local)

    _sources.LocalSourcesWatcher.update_watched_modules = _update_watched_modules
except (ImportError, AttributeError):
    pass

for name in ("numpy", "pandas", "matplotlib.pyplot"):  # what apps usually import
    try:
        importlib.import_module(name)
    except Exception:
        pass

from streamlit.web.cli import main

sys.argv = ["streamlit", *sys.argv[1:]]
sys.exit(main())
'''

GRADIO_BOOT_SOURCE = '''\
"""Fragments sandbox: a Gradio app in reload mode, gradio imported first."""
import importlib
import os
import sys
import types

if sys.path and sys.path[0] == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import gradio as gr
from gradio import http_server


def _defer_unused_apps():
    """Build an app's server (FastAPI routes, ~0.2 s of CPU each) only when it is used.

    Blocks builds one when its `with` block ends and again in `queue()`, and `launch()`
    builds the one it serves; in reload mode every re-run of the file builds two more that
    are never served (the running server swaps the new blocks in). The first two become
    lazy here: built on first use, so nothing that does use them changes. Gradio internals:
    if they move, this does nothing and the app still runs.
    """
    try:
        from gradio import blocks, networking, routes
    except ImportError:
        return
    create_app = getattr(getattr(blocks, "App", None), "create_app", None)
    if create_app is None or getattr(blocks, "App", None) is not routes.App:
        return

    class LazyApp:
        def __init__(self, args, kwargs):
            object.__setattr__(self, "_made", None)
            object.__setattr__(self, "_call", (args, kwargs))

        def _app(self):
            made = object.__getattribute__(self, "_made")
            if made is None:
                args, kwargs = object.__getattribute__(self, "_call")
                made = create_app(*args, **kwargs)
                object.__setattr__(self, "_made", made)
            return made

        def __getattr__(self, name):
            return getattr(self._app(), name)

        def __setattr__(self, name, value):
            setattr(self._app(), name, value)

        async def __call__(self, scope, receive, send):
            await self._app()(scope, receive, send)

    class DeferredApp(routes.App):
        @staticmethod
        def create_app(*args, **kwargs):
            return LazyApp(args, kwargs)

    blocks.App = DeferredApp  # `launch()` imports routes.App itself: the served app is real
    # launch() checks that its own server answers before going on; it has just been
    # started in this process, which never shares, so skip the extra HEAD of the page.
    networking.url_ok = lambda url: True


def _serve_reloaded_events():
    """After a reload, run events with the new app's functions; say when a reload is done.

    Gradio's reloader swaps the new blocks into the server and hands them the running queue,
    but the queue still looks functions up in the blocks it was made for, so a button in the
    reloaded page ran the previous code. The queue is pointed at the new blocks (and the new
    blocks at the server that serves them) before the page is told to reload.
    """
    try:
        from gradio.utils import SourceFileReloader
    except ImportError:
        return
    swap = SourceFileReloader.swap_blocks

    def swap_blocks(self, demo):
        running = self.running_app
        queue = getattr(running.blocks, "_queue", None)
        demo.app = demo.server_app = running
        if queue is not None:
            queue.blocks = demo
        swap(self, demo)

    SourceFileReloader.swap_blocks = swap_blocks
    alert = SourceFileReloader.alert_change

    def alert_change(self, change_type="reload"):
        alert(self, change_type)
        mark = "FRAGMENTS_RELOADED" if change_type == "reload" else "FRAGMENTS_RELOAD_FAILED"
        print(mark, flush=True)

    SourceFileReloader.alert_change = alert_change


def _watch(reloader):
    """Drive Gradio's reloader from a lighter watcher than gradio.utils.watchfn.

    Gradio's re-runs the whole file once more when the server starts and, on every change,
    resolves the path of each of the ~1,700 loaded modules (~0.1 s on an idle CPU, several
    times that under the sandbox's one-CPU cap) to find the app's own. This one compares
    modification times of the folder's .py/.css files every 20 ms and drops the modules
    loaded from the folder by a plain prefix test; the reload itself (re-running the file in
    the app's module, swapping the new blocks in, telling the page) is Gradio's.
    """
    import threading
    import time
    import traceback

    from gradio.cli.commands.reload import reload_thread
    from gradio.utils import NO_RELOAD

    reload_thread.running_reload = True  # a demo.launch() the app calls itself does nothing
    folder = os.path.abspath(reloader.watch_dirs[0])
    prefix = folder.rstrip("/") + "/"
    module = reloader.watch_module

    def stamps():
        found = {}
        for root, dirs, files in os.walk(folder):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if name.endswith((".py", ".css")):
                    path = os.path.join(root, name)
                    try:
                        found[path] = os.stat(path).st_mtime_ns
                    except OSError:
                        pass
        return found

    seen = stamps()
    while reloader.should_watch() and threading.main_thread().is_alive():
        time.sleep(0.02)
        now = stamps()
        if now == seen:
            continue
        seen = now
        for name, loaded in list(sys.modules.items()):
            file = getattr(loaded, "__file__", None)
            if file and file.startswith(prefix) and loaded is not module:
                del sys.modules[name]
        NO_RELOAD.set(False)  # `if gr.NO_RELOAD:` blocks run only the first time
        try:
            with open(reloader.demo_file, encoding=reloader.encoding) as source:
                code = compile(source.read(), str(reloader.demo_file), "exec")
            exec(code, module.__dict__)
            reloader.swap_blocks(getattr(module, reloader.demo_name))
        except Exception:
            traceback.print_exc()
            reloader.app.reload_error_message = traceback.format_exc()
            reloader.alert_change("error")


def _use_light_watcher():
    try:
        from gradio.utils import SourceFileReloader
    except ImportError:
        return
    base = getattr(http_server, "Server", None)
    if base is None:
        return

    class Server(base):
        def __init__(self, config, reloader=None, **kwargs):
            super().__init__(config, reloader, **kwargs)
            if isinstance(reloader, SourceFileReloader):
                self.watch = lambda: _watch(reloader)

    http_server.Server = Server


_defer_unused_apps()
_serve_reloaded_events()
_use_light_watcher()

for name in ("numpy", "pandas", "matplotlib.pyplot"):  # what apps usually import
    try:
        importlib.import_module(name)
    except Exception:
        pass

path, port = os.path.abspath(sys.argv[1]), int(sys.argv[2])
folder = os.path.dirname(path)
name = os.path.splitext(os.path.basename(path))[0]

# Reload mode, as `gradio app.py` sets it up: read by Blocks (dev mode: the page listens for
# reloads) and by the server's start (Gradio's watcher of the folder's .py files).
os.environ.update(
    GRADIO_WATCH_DIRS=folder,
    GRADIO_WATCH_MODULE_NAME=name,
    GRADIO_WATCH_DEMO_PATH=path,
    GRADIO_WATCH_DEMO_NAME="demo",
)
http_server.GRADIO_WATCH_DIRS = [folder]
http_server.GRADIO_WATCH_MODULE_NAME = name
http_server.GRADIO_WATCH_DEMO_PATH = path
http_server.GRADIO_WATCH_DEMO_NAME = "demo"

sys.path.insert(0, folder)
module = types.ModuleType(name)
module.__file__ = path
sys.modules[name] = module
with open(path, encoding="utf-8") as source:
    exec(compile(source.read(), path, "exec"), module.__dict__)
demo = module.__dict__.get("demo")
if not isinstance(demo, gr.Blocks):
    demo = next((v for v in module.__dict__.values() if isinstance(v, gr.Blocks)), None)
    if demo is not None:
        module.demo = demo
if demo is None:
    sys.exit("The app defines no Gradio app: name the gr.Blocks or gr.Interface `demo`.")
# Gradio's reloader watches the module `__main__` names when the server starts.
main = sys.modules["__main__"]
sys.modules["__main__"] = module
try:
    demo.launch(
        server_name="127.0.0.1",
        server_port=port,
        show_error=True,
        quiet=True,
        prevent_thread_lock=True,
        ssl_verify=False,  # its own http:// URL: no CA bundle to load
    )
finally:
    sys.modules["__main__"] = main
demo.block_thread()
'''

SOURCES = {STREAMLIT_BOOT: STREAMLIT_BOOT_SOURCE, GRADIO_BOOT: GRADIO_BOOT_SOURCE}


def write_web_boot(root: Path) -> Path:
    """Write the launchers once under the sandbox root (world-readable); return their folder."""
    digest = hashlib.sha256("".join(SOURCES.values()).encode()).hexdigest()[:12]
    folder = root / "lib" / f"web-{digest}"
    if not folder.is_dir():
        (root / "lib").mkdir(mode=0o755, exist_ok=True)
        tmp = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
        tmp.mkdir(mode=0o755, exist_ok=True)
        for name, source in SOURCES.items():
            (tmp / name).write_text(source)
            (tmp / name).chmod(0o644)
        try:
            tmp.rename(folder)
        except OSError:
            if not folder.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another app process wrote it first
    return folder
