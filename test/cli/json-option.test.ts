// README: "every command that prints has --json". Walks the whole command tree (what
// `shoal --help` lists) and names any command without it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Command } from 'commander';
import { registerAllCommands } from '../../src/cli/commands/all.ts';

test('every shoal command has --json', () => {
  const program = new Command('shoal');
  registerAllCommands(program);
  const missing: string[] = [];
  const walk = (c: Command, path: string[]): void => {
    if (c.commands.length === 0 && !c.options.some((o) => o.long === '--json')) missing.push(path.join(' '));
    for (const sub of c.commands) walk(sub, [...path, sub.name()]);
  };
  walk(program, ['shoal']);
  assert.deepEqual(missing, []);
});
