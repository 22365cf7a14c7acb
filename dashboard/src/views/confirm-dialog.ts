import { useEffect, useRef, useState } from 'preact/hooks';
import { html } from './html.js';

/**
 * A modal confirmation that says what an action will do (design section 10: "a confirmation
 * naming the effect"). A native <dialog>: focus moves into it, Escape cancels, the page behind is
 * inert. A refused command keeps the dialog open with the coordinator's message.
 */
export function ConfirmDialog({
  title,
  effect,
  confirmLabel,
  needsReason,
  danger,
  onConfirm,
  onClose,
}: {
  title: string;
  effect: string;
  confirmLabel: string;
  needsReason: boolean;
  danger: boolean;
  onConfirm: (reason: string) => Promise<void>;
  onClose: () => void;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  const [reason, setReason] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    const dialog = ref.current;
    if (dialog && !dialog.open) dialog.showModal();
    return () => dialog?.close();
  }, []);
  const confirm = async (e: Event) => {
    e.preventDefault();
    if (needsReason && reason.trim() === '') {
      setError('Give a reason: it is shown to everyone and kept in the audit log.');
      return;
    }
    setBusy(true);
    setError(null);
    try {
      await onConfirm(reason.trim());
      onClose();
    } catch (err) {
      const code = (err as { code?: string }).code;
      setError(`${code ? `${code}: ` : ''}${(err as Error).message}`);
      setBusy(false);
    }
  };
  return html`<dialog ref=${ref} class="confirm" aria-labelledby="confirm-title" aria-describedby="confirm-effect" onCancel=${onClose}>
    <form method="dialog" onSubmit=${confirm}>
      <h2 id="confirm-title">${title}?</h2>
      <p id="confirm-effect">${effect}</p>
      ${
        needsReason
          ? html`<label for="confirm-reason">Reason</label>
            <textarea id="confirm-reason" rows="3" maxlength="2000" required value=${reason}
              onInput=${(e: Event) => setReason((e.target as HTMLTextAreaElement).value)}></textarea>`
          : null
      }
      ${error ? html`<p class="message error" role="alert">${error}</p>` : null}
      <div class="actions">
        <button type="button" onClick=${onClose} disabled=${busy}>Cancel</button>
        <button type="submit" class=${danger ? 'danger' : 'primary'} disabled=${busy}>${busy ? 'Sending…' : confirmLabel}</button>
      </div>
    </form>
  </dialog>`;
}
