import sys


def main() -> int:
    print("stenod: not built yet", file=sys.stderr)
    return 2
