"""Command-line options for the example scripts.  Each option is a keyword argument of the
script's main() and takes main's default and that default's type, so a script names only
which of its arguments the command line may set:

    if __name__ == "__main__":
        run_main(main, __doc__, "steps", "hidden", "seed")      # --steps N --hidden N --seed N
"""
import argparse
import inspect


def run_main(main, doc, *names, helps=None, choices=None):
    """Parse --NAME options (dashes for underscores) for the keyword arguments `names` of
    `main` and call main with them; the description is the first line of `doc`.  A tuple
    default takes any number of values; `helps` and `choices` map a name to its help text or
    its allowed values."""
    defaults = {name: p.default for name, p in inspect.signature(main).parameters.items()}
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name in names:
        default = defaults[name]
        sequence = isinstance(default, tuple)
        parser.add_argument("--" + name.replace("_", "-"), default=default, nargs="*" if sequence else None,
                            type=type(default[0] if sequence else default),
                            help=(helps or {}).get(name), choices=(choices or {}).get(name))
    options = vars(parser.parse_args())
    return main(**{name: tuple(value) if isinstance(defaults[name], tuple) else value
                   for name, value in options.items()})
