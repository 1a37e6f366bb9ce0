"""User-facing errors: one clear sentence about what is wrong and what to do."""


class AgiqaError(Exception):
    """An error caused by input the user controls (paths, options, files).

    The CLI prints its message alone, without a traceback; the message must say what was
    expected and how to fix it (which file to download, which option to pass).
    """
