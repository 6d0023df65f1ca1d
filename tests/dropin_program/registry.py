"""Run a UDP registry with its defaults but the port: ``python registry.py``."""

from rpyc.utils.registry import UDPRegistryServer


def main():
    # Only the port differs from the defaults, so tests never clash on 18811.
    registry = UDPRegistryServer(port=0)
    print(f"registry: listening on port {registry.port}", flush=True)
    registry.start()


if __name__ == "__main__":
    main()
