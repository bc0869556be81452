"""PID 1 duties: start the app as the image's user, forward signals, reap
zombies, and report the app's status the way a shell would (128+N after
signal N).

`Supervisor` starts the app with subprocess.Popen; `TracedSupervisor` starts
it under slimmer.sensor.syscalls' tracer, which then owns waitpid (ptrace
stops arrive there), and has the same start/wait interface. After the app,
slimmer.sensor.seal.end_all_processes ends and reaps whatever it left."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from slimmer.protocol import STOP_REQUEST_SIGNAL
from slimmer.sensor.syscalls import LaunchRequest, SyscallTracer
from slimmer.sensor.users import AppUser

FORWARDED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGQUIT,
    signal.SIGWINCH,
)


@dataclass(frozen=True)
class AppExit:
    status: int  # as a shell reports it: the exit code, or 128+N
    signal: int | None


def decode_status(raw: int) -> AppExit:
    if os.WIFSIGNALED(raw):
        number = os.WTERMSIG(raw)
        return AppExit(128 + number, number)
    return AppExit(os.WEXITSTATUS(raw), None)


class Supervisor:
    """Runs one app as a child of PID 1 until it exits."""

    def __init__(self, stop_signal: int, stop_timeout: float) -> None:
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.app_pid: int | None = None
        self._kill_timer: threading.Timer | None = None

    def start(
        self, program: str, argv: list[str], env: Mapping[str, str], workdir: str, user: AppUser
    ) -> int:
        self._install_signal_handlers()
        self.process = subprocess.Popen(
            [argv[0], *argv[1:]],
            executable=program,
            env=dict(env),
            cwd=workdir if os.path.isdir(workdir) else "/",
            user=user.uid,
            group=user.gid,
            extra_groups=list(user.groups),
            close_fds=True,
            restore_signals=True,
        )
        self.app_pid = self.process.pid
        return self.app_pid

    def _install_signal_handlers(self) -> None:
        for number in FORWARDED_SIGNALS:
            signal.signal(number, self._forward)
        signal.signal(STOP_REQUEST_SIGNAL, self._stop_requested)

    def _forward(self, number: int, _frame: object) -> None:
        if self.app_pid is None:
            return
        try:
            os.kill(self.app_pid, number)
        except ProcessLookupError:
            return
        if number in (self.stop_signal, signal.SIGTERM, signal.SIGINT):
            self._start_kill_timer()

    def _stop_requested(self, _number: int, _frame: object) -> None:
        """The host asks to stop the app: send it the stop signal, whatever
        that is (SIGKILL, SIGPWR, a real-time signal), and SIGKILL after the
        grace time. The sensor itself stays, to write the result."""
        if self.app_pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.app_pid, self.stop_signal)
        self._start_kill_timer()

    def _start_kill_timer(self) -> None:
        if self._kill_timer is None:
            self._kill_timer = threading.Timer(self.stop_timeout, self._kill)
            self._kill_timer.daemon = True
            self._kill_timer.start()

    def _kill(self) -> None:
        if self.app_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.app_pid, signal.SIGKILL)

    def wait(self) -> AppExit:
        """Reap every child until the app exits; orphans that PID 1 inherits
        are reaped too, so no zombie stays."""
        if self.process is None:
            raise RuntimeError("wait() before start()")
        app_pid = self.process.pid
        while True:
            try:
                pid, raw = os.waitpid(-1, 0)
            except ChildProcessError:
                # the app was reaped elsewhere (cannot happen as PID 1); be safe
                return AppExit(self.process.returncode or 0, None)
            if pid == app_pid:
                self.process.returncode = raw
                if self._kill_timer is not None:
                    self._kill_timer.cancel()
                return decode_status(raw)


class TracedSupervisor(Supervisor):
    """Runs one app under the syscall tracer until it exits. The tracer's
    loop is the only waitpid: it serves every ptrace stop of the app's
    tree and reaps every child of PID 1, traced or not. Construct, start,
    wait and reap on one thread (ptrace requests come from the tracer
    thread); signal forwarding works as in Supervisor."""

    def __init__(self, stop_signal: int, stop_timeout: float, tracer: SyscallTracer) -> None:
        super().__init__(stop_signal, stop_timeout)
        self.tracer = tracer

    def start(
        self, program: str, argv: list[str], env: Mapping[str, str], workdir: str, user: AppUser
    ) -> int:
        """Raises TracingUnavailable when nothing of the app ran (fall back
        to Supervisor), OSError when the app could not be exec'd."""
        self._install_signal_handlers()
        request = LaunchRequest.of(
            program,
            argv,
            env,
            workdir if os.path.isdir(workdir) else "/",
            user.uid,
            user.gid,
            user.groups,
        )
        self.app_pid = self.tracer.launch(request)
        return self.app_pid

    def wait(self) -> AppExit:
        if self.app_pid is None:
            raise RuntimeError("wait() before start()")
        while True:
            try:
                ended = self.tracer.wait_any()
            except ChildProcessError:
                return AppExit(0, None)  # cannot happen as PID 1; be safe
            if ended is not None and ended[0] == self.app_pid:
                if self._kill_timer is not None:
                    self._kill_timer.cancel()
                return decode_status(ended[1])

    def reap_orphans(self, seconds: float = 0.2) -> None:
        """Serve stops and reap for a short while after the app ended."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                ended = self.tracer.wait_any(block=False)
            except ChildProcessError:
                return
            if ended is None:
                time.sleep(0.005)
