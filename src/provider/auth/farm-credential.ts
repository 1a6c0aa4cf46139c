// Farms call their instance services (token access by default) and hand instances import
// bindings that reach back through /x/: both carry one invoke token per provider, made when
// the provider first applies or restores a farm (never for a provider without farms).
import type { Registry } from '../registry/index.ts';
import { createApiToken } from './tokens-api.ts';

export interface FarmCredential {
  /** The token, once made. */
  current(): string | undefined;
  /** Makes it if needed (one at a time; a failure lets the next call try again). */
  ensure(): Promise<void>;
}

export function createFarmCredential(options: { registry: Pick<Registry, 'createApiToken'>; providerId: string }): FarmCredential {
  let token: string | undefined;
  let making: Promise<void> | undefined;
  return {
    current: () => token,
    ensure() {
      making ??= createApiToken(options.registry, { role: 'invoke', note: `farm calls and imports (provider ${options.providerId})` }).then(
        (t) => {
          token = t.secret;
        },
        (e: unknown) => {
          making = undefined;
          throw e;
        },
      );
      return making;
    },
  };
}
