"""User-facing errors.

Anything a user can get wrong (a file, a TOML key, an ONNX node, a multiplier name) raises :class:`DseError` with one
line that names the culprit and the fix. The CLI prints it and exits with status 2; it is never shown as a traceback.
"""


class DseError(Exception):
    """A one-line, user-facing error (bad input). The CLI prints ``error: <message>`` and exits 2."""

    exit_code = 2

    def __init__(self, message: str):
        message = " ".join(str(message).split())  # always one line
        super().__init__(message)


class SettingError(DseError):
    """A bad value of a named setting (a function parameter such as ``trial`` or a budget key such as
    ``search.workers``). The message names the setting; the CLI names the flag the value came from instead."""

    def __init__(self, setting: str, value, problem: str):
        self.setting, self.value, self.problem = setting, value, problem
        super().__init__(f"{setting}{'' if value is None else f' {value}'}: {problem}")
