import type { Command } from 'commander';
import { generateKey, writeKeyPair } from '../../../shared/keys.js';
import { type CliIo, keyValueLines } from '../io.js';

export function registerKeygen(program: Command, io: CliIo): void {
  program
    .command('keygen')
    .description('create an Ed25519 release key pair (offline; no coordinator needed)')
    .requiredOption('--out <file>', 'private key file to write (mode 0600); the public key goes to <file>.pub')
    .option('--json', 'print the result as JSON')
    .action(async (opts: { out: string; json?: boolean }) => {
      const key = generateKey();
      const { privateFile, publicFile } = await writeKeyPair(opts.out, key);
      if (opts.json) {
        // `id`: every object otactl prints as JSON names its own id so (the .pub file keeps `keyId`).
        io.out(JSON.stringify({ id: key.keyId, privateKey: privateFile, publicKey: publicFile }));
        return;
      }
      for (const line of keyValueLines([
        ['key id', key.keyId],
        ['private key', `${privateFile} (mode 0600: keep it offline, never copy it to the coordinator)`],
        ['public key', `${publicFile} (trust it with \`otactl key add ${publicFile}\` and in agent configs)`],
      ])) {
        io.out(line);
      }
    });
}
