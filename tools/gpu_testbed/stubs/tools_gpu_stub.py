"""Placeholders for a package that is imported but must never be used (tools/gpu_testbed/stubs)."""


class _Absent:
    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return _Absent(f"{self._name}.{attr}")

    def __call__(self, *args, **kwargs):
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]  # used as a decorator: @ray.remote
        if not args:
            return lambda fn: fn  # a decorator factory: @ray.remote(num_cpus=1)
        raise RuntimeError(f"{self._name} was called, but this is a stub (tools/gpu_testbed): install the real package")

    def __mro_entries__(self, bases):
        return (object,)  # a base class in a class statement


def absent_module(package: str):
    """A module-level __getattr__ that returns placeholders for `package`'s attributes."""
    return lambda name: _Absent(f"{package}.{name}")
