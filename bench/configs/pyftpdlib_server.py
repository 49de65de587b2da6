"""pyftpdlib for bench/run.sh: python pyftpdlib_server.py PORT PASV_MIN PASV_MAX ROOT USER PASS [PEM]

With PEM (certificate and key in one file), explicit FTPS (AUTH TLS) is offered."""
import logging
import sys

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer

port, pasv_min, pasv_max = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
root, user, password = sys.argv[4], sys.argv[5], sys.argv[6]
logging.basicConfig(level=logging.WARNING)  # per-command INFO logging would dominate
if len(sys.argv) > 7:
    from pyftpdlib.handlers import TLS_FTPHandler as FTPHandler  # noqa: F811

    FTPHandler.certfile = sys.argv[7]
auth = DummyAuthorizer()
auth.add_user(user, password, root, perm="elradfmwMT")
FTPHandler.authorizer = auth
FTPHandler.passive_ports = range(pasv_min, pasv_max + 1)
FTPHandler.banner = "pyftpdlib ready"
server = FTPServer(("127.0.0.1", port), FTPHandler)
server.max_cons = 0
server.max_cons_per_ip = 0
server.serve_forever()
