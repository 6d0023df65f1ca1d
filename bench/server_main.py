"""Server child: ``python -m bench.server_main TARGET [--cpu N]``.

Prints ``PORT <n>`` on stdout once the server accepts connections, then
serves until the suite kills it (it also dies with the suite).
"""

import sys


def _early_patch():
    # patch_all() must run before anything else imports socket or threading.
    from bench.targets import TARGETS

    target = TARGETS[sys.argv[1]]
    if target.patched:
        from gevent import monkey

        monkey.patch_all()
    return target


def main():
    target = _early_patch()
    import argparse

    from bench.proc import die_with_parent, pin_to_cpu, raise_nofile_limit, start_cprofile

    parser = argparse.ArgumentParser(prog="python -m bench.server_main")
    parser.add_argument("target")
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args()
    die_with_parent()
    pin_to_cpu(args.cpu)
    raise_nofile_limit()

    def on_port(port):
        sys.stdout.write(f"PORT {port}\n")
        sys.stdout.flush()

    start_cprofile("server", threads=target.threads)
    target.load().serve(on_port, *target.options)


if __name__ == "__main__":
    main()
