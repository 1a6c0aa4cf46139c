// The host's data plane: the forwarder behind a server of ours, which counts the
// requests in flight and in all (for the report and metrics).
import { createForwarder, DATA_PLANE_MAX_CONNECTIONS, type ForwardEvent, type Forwarder, type ForwarderOptions } from './data-plane/forwarder.ts';
import { closeServer, createListener, hardenServer, registerLocalDataPlane, type TlsIdentity, type UpstreamExchange } from '../http/index.ts';
import { listen } from './listen.ts';
import { advertisedUrl } from '../protocol/index.ts';

export interface DataServerOptions {
  keys: Uint8Array[];
  resolveInstance: ForwarderOptions['resolveInstance'];
  /** The instance gave no answer (502 refused/lost/bad reply, 504): the agent probes it. */
  onNoAnswer?(instance: string): void;
  listen: { host: string; port: number };
  advertiseHost?: string;
  /** Serve HTTPS. */
  tls?: TlsIdentity | undefined;
}

export interface DataServer {
  /** The advertised base URL (http://host:port). */
  readonly url: string;
  readonly forwarder: Forwarder;
  load(): { inFlight: number; requestsTotal: number };
  close(): Promise<void>;
}

export async function startDataServer(options: DataServerOptions): Promise<DataServer> {
  let inFlight = 0;
  let requestsTotal = 0;
  const onNoAnswer = options.onNoAnswer;
  const forwarder = createForwarder({
    keys: options.keys,
    resolveInstance: options.resolveInstance,
    ...(onNoAnswer === undefined ? {} : { onRequest: (e: ForwardEvent) => (e.status === 502 || e.status === 504 ? onNoAnswer(e.instance) : undefined) }),
  });
  const server = hardenServer(
    createListener({ keepAliveTimeout: 30_000, tls: options.tls }, (req, res) => {
      inFlight++;
      requestsTotal++;
      res.once('close', () => inFlight--);
      forwarder.handle(req, res);
    }),
    { maxConnectionsPerClient: DATA_PLANE_MAX_CONNECTIONS },
  );
  const port = await listen(server, options.listen.host, options.listen.port);
  const url = advertisedUrl(options.listen.host, port, options.advertiseHost, options.tls !== undefined);
  // A provider in this process reaches the forwarder by a call (src/http/local-link.ts),
  // counted in the same load figures as the requests that arrive over HTTP.
  let closed = false;
  const withdraw = registerLocalDataPlane(url, {
    request(req, handlers): UpstreamExchange {
      if (closed) {
        // As a closed listener refuses: nothing was sent.
        const idle = (): void => undefined;
        queueMicrotask(() => handlers.onError(Object.assign(new Error('the host data plane is closed'), { code: 'ECONNREFUSED' }), false, false));
        return { pause: idle, resume: idle, abort: idle };
      }
      inFlight++;
      requestsTotal++;
      let counted = true;
      const settle = (): void => {
        if (counted) inFlight--;
        counted = false;
      };
      const exchange = forwarder.exchange(req, {
        onHead: (h) => handlers.onHead(h),
        onData: (c) => handlers.onData(c),
        onEnd() {
          settle();
          handlers.onEnd();
        },
        onError(err, sent, replied) {
          settle();
          handlers.onError(err, sent, replied);
        },
      });
      return {
        pause: () => exchange.pause(),
        resume: () => exchange.resume(),
        abort() {
          settle();
          exchange.abort();
        },
      };
    },
    destroy: () => undefined,
  });
  return {
    url,
    forwarder,
    load: () => ({ inFlight, requestsTotal }),
    close: () => {
      closed = true;
      withdraw();
      return closeServer(server, forwarder.close);
    },
  };
}
