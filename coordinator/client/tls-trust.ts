import net from 'node:net';
import tls from 'node:tls';

/**
 * OpenSSL verification results (as Node reports them in `err.code`) that mean "the peer's
 * certificate chain does not lead to a CA this client trusts": a self-signed certificate, or one
 * from a private CA the client was not given. The fix is always the same: give the client that CA.
 */
const UNTRUSTED = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_UNTRUSTED',
]);

/** The OpenSSL code of a TLS trust failure anywhere in `err`'s cause chain, or null. */
export function untrustedCertificateCode(err: unknown): string | null {
  for (let e: unknown = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && UNTRUSTED.has(code)) return code;
  }
  return null;
}

/** The TLS host and port of an mqtts://, wss:// or https:// URL, or null for a plain one. */
export function tlsEndpoint(url: string): { host: string; port: number } | null {
  const u = new URL(url);
  const defaults: Record<string, number> = { 'mqtts:': 8883, 'wss:': 443, 'https:': 443 };
  const fallback = defaults[u.protocol];
  if (fallback === undefined) return null;
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
  return { host, port: u.port ? Number(u.port) : fallback };
}

/**
 * Whether a TLS server's certificate verifies against Node's bundled public CAs alone (what an
 * agent without `broker.caFile` trusts): `trusted`, `untrusted` (with the reason), or
 * `unreachable` when no handshake could be made (nothing to conclude).
 */
export function probePublicTrust(
  endpoint: { host: string; port: number },
  timeoutMs = 5_000,
): Promise<{ verdict: 'trusted' } | { verdict: 'untrusted'; reason: string } | { verdict: 'unreachable' }> {
  return new Promise((resolve) => {
    const socket = tls.connect({
      host: endpoint.host,
      port: endpoint.port,
      // Only the chain is in question here; SNI is sent for names, never for IP addresses (RFC 6066 section 3).
      ...(net.isIP(endpoint.host) ? {} : { servername: endpoint.host }),
      rejectUnauthorized: false,
    });
    const finish = (result: Parameters<typeof resolve>[0]) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => finish({ verdict: 'unreachable' }), timeoutMs);
    socket.once('secureConnect', () => {
      if (socket.authorized) finish({ verdict: 'trusted' });
      else finish({ verdict: 'untrusted', reason: String(socket.authorizationError ?? 'not trusted') });
    });
    socket.once('error', () => finish({ verdict: 'unreachable' }));
  });
}
