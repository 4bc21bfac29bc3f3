/**
 * Errors of the kubectl-flashcsi plugin. Every failure reaches the user as one line on stderr
 * (`error: …`), the way kubectl reports errors, and a non-zero exit status.
 */
import type { ApiException } from '@kubernetes/client-node';
import { FlashcsiError } from '../../errors.js';

export type PluginErrorCode =
  /** A flag or name the plugin refuses before asking the API server. */
  | 'INVALID_ARGUMENT'
  | 'NOT_FOUND'
  /** An object of that name exists with another (immutable) spec. */
  | 'ALREADY_EXISTS'
  /** The object's state does not allow it (a transaction already decided or ended). */
  | 'FAILED_PRECONDITION'
  /** --wait ran out. */
  | 'TIMEOUT'
  /** The rollback or transaction reached a failed outcome. */
  | 'FAILED'
  /** No usable kubeconfig, context or cluster. */
  | 'KUBECONFIG';

/**
 * A failure the user can act on; its message is the whole line shown (without the `error: ` prefix).
 * kubectl-flashcsi exits 1 for every error, as kubectl does.
 */
export class PluginError extends FlashcsiError<PluginErrorCode> {}

interface StatusBody {
  kind?: string;
  message?: string;
  reason?: string;
}

function statusOf(body: unknown): StatusBody | undefined {
  if (typeof body === 'string') {
    try {
      return statusOf(JSON.parse(body));
    } catch {
      return body.trim() === '' ? undefined : { message: body.trim() };
    }
  }
  if (typeof body === 'object' && body !== null) return body as StatusBody;
  return undefined;
}

/**
 * Whether `e` is client-node's ApiException (an HTTP error answer). Recognised by shape, so that this
 * module does not load client-node: `--help` and flag errors then never pay for importing it.
 */
export function isApiException(e: unknown): e is ApiException<unknown> & { code: number } {
  return e instanceof Error && typeof (e as { code?: unknown }).code === 'number' && 'body' in e && 'headers' in e;
}

/** The HTTP status of an API error, if `e` is one. */
export function apiStatusCode(e: unknown): number | undefined {
  return isApiException(e) ? e.code : undefined;
}

/** Squeezes a message onto one line. */
export function oneLine(text: string): string {
  return text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '')
    .join('; ');
}

/**
 * One line describing `e` for the user: the API server's Status message for API errors (the same text
 * kubectl prints after "Error from server (Reason):"), the message of a PluginError, and the
 * underlying cause for network and configuration errors.
 */
export function describeError(e: unknown): string {
  if (e instanceof PluginError) return oneLine(e.message);
  if (isApiException(e)) {
    const code = e.code;
    const status = statusOf(e.body);
    if (code === 401) return 'Unauthorized: the API server rejected the credentials of the current kubeconfig context';
    const reason = status?.reason !== undefined && status.reason !== '' ? `(${status.reason}) ` : '';
    const message = status?.message !== undefined && status.message !== '' ? status.message : `HTTP ${code}`;
    return oneLine(`${reason}${message}`);
  }
  if (e instanceof Error) {
    const cause = (e as Error & { cause?: unknown }).cause;
    const code = (e as Error & { code?: unknown }).code ?? (cause as { code?: unknown } | undefined)?.code;
    if (typeof code === 'string' && /^(ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|ETIMEDOUT|ECONNRESET)$/.test(code)) {
      return `cannot reach the API server (${code}): ${oneLine(e.message)}`;
    }
    return oneLine(e.message);
  }
  return oneLine(String(e));
}
