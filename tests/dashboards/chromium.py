"""Headless Chromium driven over the DevTools protocol, for the real-browser dashboard test.

No browser-automation dependency: the protocol's websocket is spoken with the synchronous client of
`websockets`, which Streamlit itself depends on. Start with `Chromium.start(tmp_dir)`, then `open(url)`, `reload()`, `wait_for(js)`, `evaluate(js)`,
`type_into(selector, text)`, `cookies()`, `screenshot(path)`, and `close()`.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1440,2000",
)


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port
        self.socket: Any = None
        self.next_id = 0

    @classmethod
    def start(cls, binary: str, profile: Path, timeout: float = 30.0) -> Chromium:
        """Launch a headless browser with a fresh profile directory and attach to its first tab."""
        process = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not port_file.exists() or not port_file.read_text().strip():
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"chromium did not start (exit code {process.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        browser = cls(process, port)
        browser._attach(deadline)
        return browser

    def _attach(self, deadline: float) -> None:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=5) as response:
                    targets = json.load(response)
                page = next(t for t in targets if t.get("type") == "page")
                break
            except (OSError, StopIteration):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.socket = connect(page["webSocketDebuggerUrl"], max_size=256 * 1024 * 1024, open_timeout=30)
        self.call("Page.enable")
        self.call("Runtime.enable")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one protocol command and wait for its reply (events in between are skipped)."""
        self.next_id += 1
        ident = self.next_id

        self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            reply = json.loads(self.socket.recv(timeout=60))
            if reply.get("id") == ident:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0, settle: float = 1.0) -> Any:
        """Poll `expression` until it is truthy and stays so for `settle` seconds; returns its value."""
        deadline = time.monotonic() + timeout
        since = None
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                since = since or time.monotonic()
                if time.monotonic() - since >= settle:
                    return value
            else:
                since = None
            time.sleep(0.25)
        raise TimeoutError(f"waited {timeout:.0f} s for: {expression}")

    def type_into(self, selector: str, text: str) -> None:
        """Focus the element matching the CSS `selector` and type `text` as keyboard input would."""
        if not self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return false; e.focus(); return true; }})()"
        ):
            raise RuntimeError(f"no element matches {selector}")
        self.call("Input.insertText", text=text)

    def reload(self) -> None:
        self.call("Page.reload", ignoreCache=True)

    def cookies(self) -> list[dict[str, Any]]:
        return self.call("Network.getCookies")["cookies"]

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            if self.socket is not None:
                self.socket.close()
        finally:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
