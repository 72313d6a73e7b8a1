"""Plain TCP in, TLS out: lets kosoku, which speaks ws:// only, run the
Autobahn cases against wsbeat's wss:// listener (scripts/autobahn.sh with
AUTOBAHN_TLS=1).

Usage: autobahn-tls-bridge.py LISTEN_PORT SERVER_PORT CA_FILE

Each connection accepted on 127.0.0.1:LISTEN_PORT gets its own TLS
connection to 127.0.0.1:SERVER_PORT, verified like a browser would: the
certificate must chain to CA_FILE and name `localhost`; TLS 1.2 or 1.3, ALPN
http/1.1. Bytes are relayed as they come, each read becoming one TLS write,
so a case's small writes stay small records. The server's end (close_notify
or EOF) reaches the client as a FIN, after everything before it, and the
client's FIN ends the TLS connection: the cases' verdicts on who closed
first are the server's own. A TLS failure ends the client's connection,
which fails its case.
"""

import asyncio
import ssl
import sys

CLIENT_GONE_GRACE_SECS = 2


def tls_context(ca_file):
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


async def relay(reader, writer, half_close):
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        try:
            # TLS has no half-close here: the client's FIN closes it all.
            if half_close and writer.can_write_eof():
                writer.write_eof()
            else:
                writer.close()
        except (ConnectionError, ssl.SSLError, RuntimeError):
            pass


def main():
    listen_port, server_port, ca_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    ctx = tls_context(ca_file)

    async def handle(client_r, client_w):
        try:
            server_r, server_w = await asyncio.open_connection(
                "127.0.0.1", server_port, ssl=ctx, server_hostname="localhost"
            )
        except (OSError, ssl.SSLError) as e:
            print(f"autobahn-tls-bridge: TLS connection to the server failed: {e}", file=sys.stderr, flush=True)
            client_w.close()
            return
        to_server = asyncio.create_task(relay(client_r, server_w, False))
        to_client = asyncio.create_task(relay(server_r, client_w, True))
        await to_server
        # The client has finished, which closed the TLS connection; asyncio
        # may never report the end of a TLS stream closed from this side,
        # so what the server still sends gets a moment, not forever.
        try:
            await asyncio.wait_for(to_client, CLIENT_GONE_GRACE_SECS)
        except asyncio.TimeoutError:
            pass
        client_w.close()
        server_w.close()

    async def serve():
        server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
        print(f"autobahn-tls-bridge: 127.0.0.1:{listen_port} -> wss on 127.0.0.1:{server_port}", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
