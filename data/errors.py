"""Typed errors shared by every framesel package.

Each error also subclasses the builtin a caller would naturally catch (GUIDE §6.5), so
``except ValueError`` keeps working for code that does not know framesel.
"""


class FrameselError(Exception):
    """Base of every error framesel raises on purpose."""


class InputError(FrameselError, ValueError):
    """A user-supplied file or option is malformed (list files, split files, options)."""


class VideoError(FrameselError, RuntimeError):
    """A single video could not be processed; carries the path and the cause.

    Extraction records ``str(err)`` in ``videos/error`` and goes on with the next video.
    """

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = str(reason)
        super().__init__(f"{self.path}: {self.reason}")

    def __reduce__(self):  # crosses process boundaries (extraction workers) intact
        return type(self), (self.path, self.reason)


class NonFiniteError(VideoError):
    """A video's rows hold NaN or inf (broken weights, features past float16's 65504):
    recorded as failed, never stored as done."""


class StoreError(FrameselError, OSError):
    """The feature store is missing, of another schema, or inconsistent."""


class SchemaError(StoreError):
    """The store was written with a schema version this framesel cannot read."""


class UnknownNameError(FrameselError, KeyError):
    """A registry (backbones, agents, store formats, flow algorithms) has no such name."""

    def __init__(self, kind, name, available):
        self.kind, self.name, self.available = kind, name, sorted(available)
        super().__init__(f"unknown {kind} {name!r}; available: {', '.join(self.available)}")

    def __reduce__(self):
        return type(self), (self.kind, self.name, self.available)

    def __str__(self):  # KeyError would otherwise quote the whole message
        return self.args[0]
