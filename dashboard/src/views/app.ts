import { useCallback, useState } from 'preact/hooks';
import { type Credentials, clearCredentials, loadCredentials, saveCredentials } from '../session-store.js';
import { Dashboard } from './dashboard.js';
import { html } from './html.js';
import { SignIn } from './sign-in.js';

/** Signed out: the sign-in form. Signed in: the dashboard, with its own connection. */
export function App({ prefix }: { prefix: string }) {
  const [credentials, setCredentials] = useState<Credentials | null>(() => loadCredentials(sessionStorage));
  const [message, setMessage] = useState<string | null>(null);
  const onAccepted = useCallback(() => {
    if (credentials) saveCredentials(sessionStorage, credentials);
  }, [credentials]);
  const onRefused = useCallback((text: string) => {
    clearCredentials(sessionStorage);
    setMessage(text);
    setCredentials(null);
  }, []);
  const onSignOut = useCallback(() => {
    clearCredentials(sessionStorage);
    setMessage('Signed out.');
    setCredentials(null);
  }, []);
  if (!credentials) {
    return html`<${SignIn} message=${message} onSignIn=${(user: string, token: string) => {
      setMessage(null);
      setCredentials({ user, token });
    }} />`;
  }
  return html`<${Dashboard} credentials=${credentials} prefix=${prefix} onAccepted=${onAccepted} onRefused=${onRefused} onSignOut=${onSignOut} />`;
}
