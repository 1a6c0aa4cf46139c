// Every sub-command, in the order `shoal --help` lists them. main.ts loads this for any
// command but `call`, which it registers alone to start fast.
import type { Command } from 'commander';
import { registerStoreCommands } from './store.ts';
import { registerImageCommands } from './image.ts';
import { registerTemplateCommands } from './template.ts';
import { registerUpCommand } from './up.ts';
import { registerHostCommand } from './host.ts';
import { registerProviderCommand } from './provider.ts';
import { registerServiceCommands } from './service.ts';
import { registerHostsCommand } from './hosts.ts';
import { registerDeploymentsCommand } from './deployments.ts';
import { registerCallCommand } from './call.ts';
import { registerPsCommand } from './ps.ts';
import { registerFarmCommands } from './farm.ts';
import { registerTokenCommands } from './token.ts';
import { registerAuditCommand } from './audit.ts';
import { registerLogsCommand } from './logs.ts';
import { registerDeployCommand } from './deploy.ts';
import { registerStatusCommand } from './status.ts';
import { registerRegistryCommands } from './registry.ts';
import { registerLiveCommands } from './live.ts';

export function registerAllCommands(program: Command): void {
  registerUpCommand(program);
  registerStoreCommands(program);
  registerHostCommand(program);
  registerProviderCommand(program);
  registerServiceCommands(program);
  registerHostsCommand(program);
  registerDeploymentsCommand(program);
  registerCallCommand(program);
  registerPsCommand(program);
  registerDeployCommand(program);
  registerLiveCommands(program);
  registerLogsCommand(program);
  registerStatusCommand(program);
  registerFarmCommands(program);
  registerTokenCommands(program);
  registerRegistryCommands(program);
  registerAuditCommand(program);
  registerTemplateCommands(program);
  registerImageCommands(program);
}
