// Checks of the names a store call takes: repository, tag, and a reference (tag or digest).
import { isDigest, type Digest, ShoalError, isRepositoryName, isTagName } from '../../protocol/index.ts';

export function checkRepo(repo: string): void {
  if (!isRepositoryName(repo)) {
    throw new ShoalError('invalid', `bad repository name ${JSON.stringify(repo)} (lowercase letters, digits, . _ - and /)`, {
      field: 'repository',
    });
  }
}

export function checkTag(tag: string): void {
  if (!isTagName(tag)) throw new ShoalError('invalid', `bad tag ${JSON.stringify(tag)}`, { field: 'tag' });
}

export type Reference = { digest: Digest; tag?: undefined } | { tag: string; digest?: undefined };

export function parseReference(reference: string): Reference {
  if (isDigest(reference)) return { digest: reference };
  if (isTagName(reference)) return { tag: reference };
  throw new ShoalError('invalid', `bad reference ${JSON.stringify(reference)}: neither a tag nor a sha256 digest`, {
    field: 'reference',
  });
}
