// Data links to data planes that live in this very process (`shoal up`, and any provider
// started beside its hosts): the provider hands its request to the host's forwarder as a
// call instead of writing it to a loopback socket that the same process then reads back.
//
// Why: with provider and host in one process, the warm path paid for two HTTP servers and
// two clients on one thread (5 writes, 4 reads and two HTTP parses per message, measured in
// bench/warm-path.ts); through this link a message costs one server, one client, 2 writes
// and 2 reads, like a single proxy. Nothing is skipped on the way: the host's forwarder
// still checks the route token, its operation scope and the instance's state, and makes
// the same marked replies (x-shoal-error) as over HTTP.
//
// A data plane registers under the origin it advertises; a provider asks for the origin
// of the endpoint reference it got. Only this process's registrations are visible, so a
// host in another process is always reached over the network. SHOAL_DATA_LINK=tcp turns
// the shortcut off (benchmarks compare both).
import type { OutgoingRequest, ReplyHandlers, UpstreamExchange } from './upstream.ts';

/** What the provider needs of a link to a host's data plane: an Upstream, or a local one. */
export interface DataLink {
  /** Sends one whole request; its reply goes to `handlers` (never synchronously). */
  request(req: OutgoingRequest, handlers: ReplyHandlers): UpstreamExchange;
  /** Drops what the link holds (pooled connections); a local link holds nothing. */
  destroy(): void;
}

const planes = new Map<string, DataLink>();

/** `http://127.0.0.1:8080/` and `http://127.0.0.1:8080` name one data plane. */
function originOf(url: string): string {
  return new URL(url).origin;
}

/** Makes the data plane at `url` reachable in-process; the returned function withdraws it. */
export function registerLocalDataPlane(url: string, link: DataLink): () => void {
  const origin = originOf(url);
  planes.set(origin, link);
  return () => {
    if (planes.get(origin) === link) planes.delete(origin);
  };
}

/** The in-process data plane at `url`, if one is registered here and the shortcut is on. */
export function localDataPlane(url: string): DataLink | undefined {
  if (planes.size === 0 || process.env.SHOAL_DATA_LINK === 'tcp') return undefined;
  return planes.get(originOf(url));
}
