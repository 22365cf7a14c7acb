/** A release's id: `model@version` (design section 4). The one place it is built and read. */
export function releaseIdOf(model: string, version: string): string {
  return `${model}@${version}`;
}

/** The version part of a release id (everything after the first `@`; versions never contain one). */
export function versionOfRelease(releaseId: string): string {
  const at = releaseId.indexOf('@');
  return at < 0 ? releaseId : releaseId.slice(at + 1);
}
