"""Views with asyncio's transport API over rsubprocess's objects.

asyncio code in the wild reaches into ``proc._transport`` (``get_extra_info('subprocess')``,
``get_pipe_transport(fd)``, ``close()``) and ``writer.transport``. These thin views answer
those calls from the Rust objects; they hold no state of their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from ._core import Process, StreamReader, StreamWriter


class ReadPipeTransport:
    """asyncio's ``_UnixReadPipeTransport`` API over a ``StreamReader``'s pipe."""

    __slots__ = ("_reader",)

    def __init__(self, reader: StreamReader) -> None:
        self._reader = reader

    def pause_reading(self) -> None:
        self._reader._pipe_pause()

    def resume_reading(self) -> None:
        self._reader._pipe_resume()

    def is_reading(self) -> bool:
        return self._reader._pipe_polling

    def close(self) -> None:
        self._reader._pipe_close()

    def is_closing(self) -> bool:
        return self._reader._pipe_fd is None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def __repr__(self) -> str:
        fd = self._reader._pipe_fd
        return f"<ReadPipeTransport fd={fd}>" if fd is not None else "<ReadPipeTransport closed>"


class WritePipeTransport:
    """asyncio's ``_UnixWritePipeTransport`` API over a ``StreamWriter``."""

    __slots__ = ("_writer",)

    def __init__(self, writer: StreamWriter) -> None:
        self._writer = writer

    def write(self, data: Any) -> None:
        self._writer.write(data)

    def writelines(self, data: Any) -> None:
        self._writer.writelines(data)

    def write_eof(self) -> None:
        self._writer.write_eof()

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        self._writer.close()

    def abort(self) -> None:
        self._writer._abort()

    def is_closing(self) -> bool:
        return self._writer.is_closing()

    def get_write_buffer_size(self) -> int:
        return self._writer.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._writer.get_write_buffer_limits()

    def set_write_buffer_limits(
        self, high: Optional[int] = None, low: Optional[int] = None
    ) -> None:
        self._writer.set_write_buffer_limits(high, low)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._writer.get_extra_info(name, default)

    def __repr__(self) -> str:
        fd = self._writer._pipe_fd
        return f"<WritePipeTransport fd={fd}>" if fd is not None else "<WritePipeTransport closed>"


class SubprocessTransport:
    """asyncio's ``BaseSubprocessTransport`` API over a ``Process``."""

    __slots__ = ("_proc",)

    def __init__(self, proc: Process) -> None:
        self._proc = proc

    def get_pid(self) -> int:
        return self._proc.pid

    def get_returncode(self) -> Optional[int]:
        return self._proc.returncode

    def get_pipe_transport(self, fd: int) -> Any:
        if fd == 0:
            w = self._proc.stdin
            return WritePipeTransport(w) if w is not None else None
        r = self._proc.stdout if fd == 1 else self._proc.stderr if fd == 2 else None
        if r is None or r._pipe_fd is None:
            return None
        return ReadPipeTransport(r)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._proc._popen if name == "subprocess" else default

    def send_signal(self, signal: int) -> None:
        self._proc.send_signal(signal)

    def terminate(self) -> None:
        self._proc.terminate()

    def kill(self) -> None:
        self._proc.kill()

    def is_closing(self) -> bool:
        return self._proc.returncode is not None

    def close(self) -> None:
        """Close the pipes and kill the child if it still runs (asyncio's semantics)."""
        proc = self._proc
        for fd in (0, 1, 2):
            t = self.get_pipe_transport(fd)
            if t is not None:
                t.close()
        if proc.returncode is None:
            try:
                proc.kill()
            except ProcessLookupError:
                pass

    async def _wait(self) -> int:
        return await self._proc.wait()

    def __repr__(self) -> str:
        state = (
            "running" if self._proc.returncode is None else f"returncode={self._proc.returncode}"
        )
        return f"<SubprocessTransport pid={self._proc.pid} {state}>"
