"""Classic mode through RPyC's command line, as RPyC's ``bin/rpyc_classic.py`` does.

Prints ``rpyc-oneshot`` and ``HOST<TAB>PORT``, serves one client, exits.
"""

import sys

from rpyc.cli.rpyc_classic import main

if __name__ == "__main__":
    sys.argv = ["rpyc_classic", "-m", "oneshot", "--host", "localhost", "-p", "0"]
    main()
