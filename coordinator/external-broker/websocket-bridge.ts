import type http from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { createWebSocketStream, WebSocketServer } from 'ws';
import type { Logger } from '../../shared/logger.js';
import { MAX_PAYLOAD_BYTES } from '../../shared/payload.js';
import { defaultMaxPacketBytes, MAX_FIXED_HEADER_BYTES } from '../broker/packet-size-guard.js';

/** Bridged connections at once (each a WebSocket and a broker connection). */
const MAX_BRIDGED = 1_000;
const CONNECT_TIMEOUT_MS = 15_000;

/**
 * MQTT over WebSocket at `/mqtt` on the coordinator's HTTP server, passed through to an external
 * broker's MQTT listener byte for byte, so the dashboard (design section 10) works unchanged: the
 * same origin, TLS and Content-Security-Policy as with the embedded broker. MQTT over WebSocket is
 * the same packets in binary messages (MQTT 3.1.1 section 6), so nothing is parsed here: the
 * broker authenticates the page's operator and applies its ACL.
 */
export function bridgeWebSocketToBroker(
  httpServer: http.Server,
  broker: { url: string; ca?: Buffer | undefined },
  logger: Logger,
  path = '/mqtt',
): { close(): void } {
  const target = new URL(broker.url);
  const secure = target.protocol === 'mqtts:';
  const port = Number(target.port || (secure ? 8883 : 1883));
  const host = target.hostname.replace(/^\[|\]$/g, '');
  // What a client may send: one packet of the coordinator's payload cap with its topic and
  // header, as the embedded broker allows (a bigger one would be refused anyway); unread data
  // from an unauthenticated peer is never buffered beyond that.
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: defaultMaxPacketBytes(MAX_PAYLOAD_BYTES) + MAX_FIXED_HEADER_BYTES,
  });
  const open = new Set<{ close(): void }>();
  const onUpgrade = (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    const url = req.url ?? '/';
    const pathname = url.startsWith('/') ? (url.split('?')[0] ?? '') : null;
    if (pathname !== path) {
      if (httpServer.listenerCount('upgrade') <= 1) socket.destroy();
      return;
    }
    if (open.size >= MAX_BRIDGED) {
      // Dashboards and browser scripts are few; a flood of connections is not one of them.
      socket.end('HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      const stream = createWebSocketStream(ws);
      const upstream = secure
        ? tls.connect({ host, port, servername: host, ...(broker.ca ? { ca: broker.ca } : {}) })
        : net.connect({ host, port });
      const entry = {
        close: () => {
          upstream.destroy();
          ws.terminate();
        },
      };
      open.add(entry);
      const end = () => {
        open.delete(entry);
        entry.close();
      };
      // A broker host that drops our SYNs must not hold the page's WebSocket for minutes.
      upstream.setTimeout(CONNECT_TIMEOUT_MS, () => {
        logger.debug({ broker: broker.url }, 'websocket bridge: no connection to the broker in time');
        end();
      });
      upstream.once('connect', () => upstream.setTimeout(0));
      upstream.once('secureConnect', () => upstream.setTimeout(0));
      upstream.on('error', (err) => {
        logger.debug({ err: err.message }, 'websocket bridge: broker connection failed');
        end();
      });
      stream.on('error', end);
      upstream.on('close', end);
      ws.on('close', end);
      stream.pipe(upstream);
      upstream.pipe(stream);
    });
  };
  httpServer.on('upgrade', onUpgrade);
  return {
    close() {
      httpServer.off('upgrade', onUpgrade);
      for (const c of [...open]) c.close();
      wss.close();
    },
  };
}
