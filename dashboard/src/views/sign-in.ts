import { useState } from 'preact/hooks';
import { checkSignIn } from '../session-store.js';
import { html } from './html.js';

/**
 * Operator name and token, the same accounts as otactl. The form never submits anywhere: the
 * token goes to the broker as the MQTT password and, once accepted, to sessionStorage.
 */
export function SignIn({
  message,
  onSignIn,
}: {
  message: string | null;
  onSignIn: (user: string, token: string) => void;
}) {
  const [user, setUser] = useState('');
  const [token, setToken] = useState('');
  const [problem, setProblem] = useState<string | null>(null);
  const submit = (e: Event) => {
    e.preventDefault();
    const bad = checkSignIn(user, token);
    setProblem(bad);
    if (bad === null) onSignIn(user.trim(), token.trim());
  };
  const shown = problem ?? message;
  return html`<main class="sign-in">
    <form onSubmit=${submit} aria-labelledby="sign-in-title" novalidate>
      <h1 id="sign-in-title">OTA models</h1>
      <p class="muted">Sign in with an operator account (the same as otactl).</p>
      ${shown ? html`<p class="message error" role="alert" id="sign-in-error">${shown}</p>` : null}
      <label for="user">Operator</label>
      <input id="user" name="user" autocomplete="username" autocapitalize="off" spellcheck="false"
        value=${user} onInput=${(e: Event) => setUser((e.target as HTMLInputElement).value)} />
      <label for="token">Token</label>
      <input id="token" name="token" type="password" autocomplete="current-password"
        value=${token} onInput=${(e: Event) => setToken((e.target as HTMLInputElement).value)} />
      <button type="submit" class="primary">Sign in</button>
    </form>
  </main>`;
}
