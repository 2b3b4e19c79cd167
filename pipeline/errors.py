"""Errors the user can act on.

Anything raised as a `PipelineError` is bad input, not a bug: the CLI prints its message without a
traceback and exits with status 2. The message always says where the problem is (step, stage,
parameter, file) because a user reading it has only the config and the data in front of them.
"""

from __future__ import annotations

import re

# How a library call labels an in-memory input (`in_memory_input`, for `pipeline.stage.library_input`): "input 'data'".
IN_MEMORY_INPUT = re.compile(r"input '[^']+'")


def in_memory_input(name: str) -> str:
    """The label of a library call's in-memory input `name`, which errors name as itself, not as a file."""
    return f"input '{name}'"


class PipelineError(Exception):
    """A problem in the config or the data, reported as one readable line."""

    def __init__(
        self,
        message: str,
        *,
        step: str | None = None,
        stage: str | None = None,
        param: str | None = None,
        file: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.step = step
        self.stage = stage
        self.param = param
        self.file = file
        self.hint = hint

    def add_context(
        self, *, step: str | None = None, stage: str | None = None, file: str | None = None
    ) -> PipelineError:
        """Fill in where the error happened, keeping anything more precise already set."""
        self.step = self.step or step
        self.stage = self.stage or stage
        self.file = self.file or file
        return self

    def __reduce__(self):
        # Subclasses take other constructor arguments; rebuild from state so errors raised on a
        # Ray worker or in a subprocess arrive intact.
        return (_rebuild, (type(self), self.message, dict(self.__dict__)))

    def __str__(self) -> str:
        where = []
        if self.step:
            where.append(f"step '{self.step}'" + (f" (stage '{self.stage}')" if self.stage else ""))
        elif self.stage:
            where.append(f"stage '{self.stage}'")
        if self.param:
            where.append(f"parameter '{self.param}'")
        if self.file and IN_MEMORY_INPUT.fullmatch(self.file):
            # A library call's table, labelled by its input's name: not a file ("file 'input 'data''"), and named
            # once where the message already says it.
            if self.file not in self.message:
                where.append(self.file)
        elif self.file:
            where.append(f"file '{self.file}'")
        text = (", ".join(where) + ": " if where else "") + self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


def _rebuild(cls: type[PipelineError], message: str, state: dict) -> PipelineError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class ParamError(PipelineError):
    """A stage parameter has a value the stage cannot use."""

    def __init__(self, param: str, message: str, **kwargs) -> None:
        super().__init__(message, param=param, **kwargs)


class InputDataError(PipelineError):
    """An input table is missing, empty, unreadable or lacks a column the stage needs."""


class LockedError(PipelineError):
    """Another run holds the workdir lock of the same pipeline."""


def first_line(exc: BaseException) -> str:
    """An exception's first non-blank line, stripped (many span several: a query echoed, a caret, a trace of
    their own), or its type's name when it has no message."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__
