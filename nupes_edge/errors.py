"""The one exception type for mistakes a user can make (bad file, unsupported op, bad value).

The CLI turns it into a one-line message and exit code 2; everything else is a bug.
"""


class NupesError(Exception):
    """A user-facing error. The message names the file, layer, op or value at fault."""
