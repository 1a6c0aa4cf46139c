// The address a listening role puts in the URLs it hands out. A wildcard listen address
// (0.0.0.0, ::) cannot be dialled, so the advertised host (or loopback) stands in; an
// IPv6 literal is bracketed. Pure: host and provider both use it.

/** Whether `host` listens on every interface. */
export function isWildcardHost(host: string): boolean {
  return host === '0.0.0.0' || host === '::';
}

/** The host part of a URL for a server listening on `listenHost`. */
export function advertisedHost(listenHost: string, advertiseHost?: string): string {
  const host = isWildcardHost(listenHost) ? (advertiseHost ?? '127.0.0.1') : (advertiseHost ?? listenHost);
  return host.includes(':') ? `[${host}]` : host;
}

/** http(s)://<advertised host>:<port> for a server bound to `port` on `listenHost`. */
export function advertisedUrl(listenHost: string, port: number, advertiseHost?: string, secure = false): string {
  return `${secure ? 'https' : 'http'}://${advertisedHost(listenHost, advertiseHost)}:${port}`;
}
