"""Headless Chromium over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON messages ended
by a NUL byte on file descriptors 3 and 4), standard library only. For what ``--dump-dom`` cannot do:
watch a page change after it loaded (the live stream)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any


class Browser:
    """One headless Chromium with one page; :meth:`close` ends it."""

    def __init__(self, binary: str, profile: Path) -> None:
        # Chromium reads commands on fd 3 and answers on fd 4: the shell moves our stdin/stdout pipes there.
        self.process = subprocess.Popen(
            ["sh", "-c", 'exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>/dev/null', binary, "--headless", "--no-sandbox",
             "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}", "--remote-debugging-pipe",
             "about:blank"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._to_browser = self.process.stdin.fileno()
        self._from_browser = self.process.stdout.fileno()
        self._buffer = b""
        self._id = 0
        self.errors: list[str] = []
        """Console messages and uncaught exceptions of the page."""
        target = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self._session = self.call("Target.attachToTarget", targetId=target["targetId"], flatten=True)["sessionId"]
        self.call("Runtime.enable", session=True)

    def call(self, method: str, *, session: bool = False, **params: Any) -> dict[str, Any]:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_browser, 65536)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        method = message.get("method")
        if method == "Runtime.consoleAPICalled":
            self.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in message["params"]["args"]))
        elif method == "Runtime.exceptionThrown":
            self.errors.append(message["params"]["exceptionDetails"].get("text", "exception"))
        return message

    def go(self, url: str) -> None:
        self.call("Page.navigate", session=True, url=url)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 10.0) -> Any:
        """The first truthy value of ``expression`` in the page (polled), or AssertionError."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {expression}")

    def screenshot(self, path: Path, width: int) -> None:
        """A PNG of the whole page as a phone ``width`` CSS pixels wide shows it (mobile viewport)."""
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=800, deviceScaleFactor=1,
                  mobile=True)
        height = int(self.evaluate("document.documentElement.scrollHeight"))
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=True)
        shot = self.call("Page.captureScreenshot", session=True, format="png")
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        self.process.stdout.close()
