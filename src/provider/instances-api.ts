// Two control calls the dashboard (and any client) makes on running instances:
//   PUT    /api/v1/services/:name/scale  {"instances": n}  deploy or stop instances until n run
//   DELETE /api/v1/instances/:id                           stop one instance (drained first)
// Both act on this provider's routing set; the autoscaler keeps running afterwards, so a
// service scaled above its load may be scaled down again when idle (its scaling rules).
import { Hono } from 'hono';
import { Value } from '@sinclair/typebox/value';
import { ScaleRequestBody, ShoalError, type ScaleReply } from '../protocol/index.ts';
import type { ControlPlane } from './control-plane.ts';
import type { Deployer } from './deployer.ts';
import type { RoutingTable } from './routing-table.ts';

export function createInstancesApi(o: { table: RoutingTable; control: Pick<ControlPlane, 'deploy'>; deployer: Pick<Deployer, 'undeploy'> }): Hono {
  const app = new Hono();

  app.put('/api/v1/services/:name/scale', async (c) => {
    const name = c.req.param('name');
    let body: unknown;
    try {
      body = await c.req.json();
    } catch {
      throw new ShoalError('invalid', 'body: send {"instances": n} as JSON', { field: 'body' });
    }
    if (!Value.Check(ScaleRequestBody, body)) throw new ShoalError('invalid', 'send {"instances": n}, n an integer from 0 to 100', { field: 'instances' });
    const n = body.instances;
    if (o.table.service(name) === undefined) throw new ShoalError('not-found', `no service named ${JSON.stringify(name)}`, { field: 'name' });
    const running = o.table.endpoints(name);
    if (n > running.length) {
      const outcome = await o.control.deploy(name, { count: n - running.length, reason: 'scale' });
      const reply: ScaleReply = { service: name, before: running.length, instances: o.table.endpoints(name).length, errors: outcome.errors };
      return c.json(reply, outcome.errors.length > 0 && outcome.ready.length === 0 ? 503 : 200);
    }
    // The newest go first: the oldest are the warmest.
    const extra = [...running].sort((a, b) => b.readyAt - a.readyAt).slice(0, running.length - n);
    await Promise.all(extra.map((ep) => o.deployer.undeploy(ep, 'scaled-down')));
    const reply: ScaleReply = { service: name, before: running.length, instances: o.table.endpoints(name).length, errors: [] };
    return c.json(reply);
  });

  app.delete('/api/v1/instances/:id', async (c) => {
    const id = c.req.param('id');
    const ep = o.table.endpoint(id);
    if (ep === undefined) throw new ShoalError('not-found', `no routable instance ${JSON.stringify(id)} on this provider`, { field: 'id' });
    await o.deployer.undeploy(ep, 'removed');
    return c.json({ removed: id, service: ep.service });
  });

  return app;
}
