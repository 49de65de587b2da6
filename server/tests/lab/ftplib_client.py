"""Python's ftplib in the network lab (server/tests/netlab.rs), one step per line.

    ftplib_client.py pasv HOST PORT FILE       PASV (EPSV on IPv6), taking the 227's address
                                               at its word, and a download
    ftplib_client.py pasv-tls HOST PORT        AUTH TLS, PROT P, then what PASV says
    ftplib_client.py active HOST PORT FILE     PORT (EPRT on IPv6) and a download
    ftplib_client.py concurrent HOST PORT N LO HI
                                               N sessions each holding a PASV listener at
                                               once, then all downloading; the data ports
                                               must be N distinct ports in LO..HI
    ftplib_client.py probe HOST PORT           a connection attempt, half a second long
"""

import ftplib
import hashlib
import socket
import ssl
import sys
import threading

TIMEOUT = 15


def connect(host, port):
    f = ftplib.FTP(timeout=TIMEOUT)
    # Like Windows ftp.exe and most older clients: the 227's address, not the control
    # connection's (ftplib's own default since 3.9 hides what a NAT does).
    f.trust_server_pasv_ipv4_address = True
    f.connect(host, int(port))
    f.login()
    return f


def pasv(host, port, name):
    f = connect(host, port)
    print(f.sendcmd("EPSV" if ":" in host else "PASV"))
    data = bytearray()
    try:
        f.retrbinary("RETR " + name, data.extend)
    except OSError as e:
        print("data connection failed:", e)
        sys.exit(1)
    print("got", len(data), "bytes")
    f.quit()


def pasv_tls(host, port):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    f = ftplib.FTP_TLS(context=ctx, timeout=TIMEOUT)
    f.connect(host, int(port))
    f.auth()
    f.login("alice", "s3cret")
    f.prot_p()
    print(f.sendcmd("PASV"))
    f.quit()


def active(host, port, name):
    f = connect(host, port)
    v6 = ":" in host
    listener = socket.create_server(("", 0), family=socket.AF_INET6 if v6 else socket.AF_INET)
    listener.settimeout(TIMEOUT)
    ip, lport = f.sock.getsockname()[0], listener.getsockname()[1]
    try:
        if v6:
            print(f.sendcmd(f"EPRT |2|{ip}|{lport}|"))
        else:
            numbers = ip.split(".") + [str(lport >> 8), str(lport & 255)]
            print(f.sendcmd("PORT " + ",".join(numbers)))
        print(f.sendcmd("RETR " + name))
    except ftplib.error_perm as e:
        print(e)
        sys.exit(1)
    conn, peer = listener.accept()
    print("data connection from port", peer[1])
    data = bytearray()
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data.extend(chunk)
    conn.close()
    print(f.voidresp())
    print("got", len(data), "bytes")
    f.quit()


def concurrent(host, port, n, lo, hi):
    n, lo, hi = int(n), int(lo), int(hi)
    barrier = threading.Barrier(n, timeout=60)
    want = None
    results = [None] * n

    def one(i):
        try:
            f = connect(host, port)
            f.voidcmd("TYPE I")
            _, data_port = ftplib.parse227(f.sendcmd("PASV"))
            barrier.wait()  # every session holds its passive listener now
            s = socket.create_connection((host, data_port), timeout=TIMEOUT)
            f.sendcmd("RETR big.bin")
            h = hashlib.sha256()
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                h.update(chunk)
            s.close()
            f.voidresp()
            f.quit()
            results[i] = (data_port, h.hexdigest())
        except Exception as e:  # reported below, with the session's number
            barrier.abort()
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = [(i, r) for i, r in enumerate(results) if not isinstance(r, tuple)]
    if failed:
        print("failed sessions:", failed[:5], "of", len(failed))
        sys.exit(1)
    digests = {d for _, d in results}
    ports = {p for p, _ in results}
    if len(digests) != 1:
        print("the downloads differ:", len(digests), "distinct digests")
        sys.exit(1)
    in_range = all(lo <= p <= hi for p in ports)
    print(f"{n} sessions transferred, {len(ports)} distinct passive ports",
          "in range" if in_range else f"NOT in range: {sorted(ports)}")


def probe(host, port):
    try:
        socket.create_connection((host, int(port)), timeout=0.5).close()
        print("answered")
    except socket.timeout:
        print("no answer")
    except OSError as e:
        print("refused:", e)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"pasv": pasv, "pasv-tls": pasv_tls, "active": active,
     "concurrent": concurrent, "probe": probe}[cmd](*args)
