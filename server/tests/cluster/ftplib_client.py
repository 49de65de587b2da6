"""Python's ftplib through the load balancer (server/tests/cluster.rs).

    ftplib_client.py get SOURCE HOST PORT NAME OUT [tls]   PASV download to OUT
    ftplib_client.py put SOURCE HOST PORT FILE NAME [tls]  PASV upload of FILE as NAME

SOURCE is the local address to connect from (the client the nodes must see); "tls" is
explicit FTPS with PROT P. Prints the greeting, then "ok".
"""

import ftplib
import ssl
import sys

TIMEOUT = 20


class ResumingFTP_TLS(ftplib.FTP_TLS):
    """FTP_TLS whose data connections resume the control connection's TLS session, as
    wharf requires by default (ftplib's own does not)."""

    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(conn, server_hostname=self.host,
                                            session=self.sock.session)
        return conn, size


def session(source, host, port, tls):
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        f = ResumingFTP_TLS(context=ctx, timeout=TIMEOUT, source_address=(source, 0))
    else:
        f = ftplib.FTP(timeout=TIMEOUT, source_address=(source, 0))
    print(f.connect(host, int(port)).splitlines()[0])
    if tls:
        f.auth()
    f.login("alice", "s3cret")
    if tls:
        f.prot_p()
    return f


def get(source, host, port, name, out, tls=None):
    f = session(source, host, port, tls)
    with open(out, "wb") as o:
        f.retrbinary("RETR " + name, o.write)
    f.quit()
    print("ok")


def put(source, host, port, local, name, tls=None):
    f = session(source, host, port, tls)
    with open(local, "rb") as i:
        f.storbinary("STOR " + name, i)
    f.quit()
    print("ok")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"get": get, "put": put}[cmd](*args)
