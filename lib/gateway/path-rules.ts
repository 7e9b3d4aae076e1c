import type { Request } from 'express';
import { KeyFailoverError, describeValue } from '../validations.js';

/**
 * keyPassthrough's `allow` and `deny`: which paths of the provider's API a
 * pool key may be used on. By default everything but the admin API, which a
 * pool key can reach if the account's keys allow it (OpenAI's
 * `/v1/organization/*`: users, projects, admin keys, usage; Anthropic's
 * `/v1/organizations/*`): one tenant must not manage the account of all.
 */

/** A path prefix (`'/v1/files'`: that path and everything under it), or a function deciding for a path. */
export type PassthroughPathRule = string | ((path: string, req: Request) => boolean);

/** OpenAI's admin API, and Anthropic's. */
export const ADMIN_API_PREFIXES: readonly string[] = ['/v1/organization', '/v1/organizations'];

export interface PathRules {
  /** Whether `path` (as the upstream routes it, relative to the mount point, percent-decoded) may be forwarded. */
  permits(path: string, req: Request): boolean;
}

interface RuleList {
  prefixes: string[];
  functions: ((path: string, req: Request) => unknown)[];
}

// A plain absolute path: no query, fragment, whitespace, backslash, percent-encoding or dot segment.
const PREFIX = /^\/[^?#\s\\%]*$/;
const DOT_SEGMENT = /(^|\/)\.{1,2}(\/|$)/;

export function checkPathRules(where: string, options: { allow?: unknown; deny?: unknown }): PathRules {
  const allow = options.allow === undefined ? undefined : checkRuleList(where, 'allow', options.allow);
  const deny = options.deny === undefined ? checkRuleList(where, 'deny', ADMIN_API_PREFIXES) : checkRuleList(where, 'deny', options.deny);
  return {
    permits(path, req) {
      // Compared the way a lenient upstream router might read it: repeated slashes as one, any case.
      const routed = path.replace(/\/{2,}/g, '/');
      if (matches(where, 'deny', deny, routed, req)) return false;
      return allow === undefined || matches(where, 'allow', allow, routed, req);
    },
  };
}

function checkRuleList(where: string, name: 'allow' | 'deny', value: unknown): RuleList {
  const entries: unknown[] = Array.isArray(value) ? value : [value];
  if (name === 'allow' && entries.length === 0) {
    throw new KeyFailoverError(
      'ERR_EKF_INVALID_OPTION',
      `${where}: option "allow" is an empty array, which would refuse every path; leave it out to allow every path but those in "deny".`,
    );
  }
  const list: RuleList = { prefixes: [], functions: [] };
  entries.forEach((entry, index) => {
    if (typeof entry === 'function') {
      list.functions.push(entry as (path: string, req: Request) => unknown);
    } else if (typeof entry === 'string' && PREFIX.test(entry) && !DOT_SEGMENT.test(entry)) {
      list.prefixes.push(normalise(entry.replace(/\/+$/, '') || '/'));
    } else {
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_OPTION',
        `${where}: option "${name}" must be a path prefix such as '/v1/files', a function (path, req) => boolean, or an array of them; ${
          Array.isArray(value) ? `entry ${index} is` : 'got'
        } ${describeEntry(entry)}.`,
      );
    }
  });
  return list;
}

// A string that starts with "/" is shown (it is a path gone wrong); any other is not: it could be a secret put in the wrong place.
function describeEntry(entry: unknown): string {
  return typeof entry === 'string' && entry.startsWith('/') ? JSON.stringify(entry) : describeValue(entry);
}

function normalise(path: string): string {
  return path.replace(/\/{2,}/g, '/').toLowerCase();
}

function matches(where: string, name: string, list: RuleList, path: string, req: Request): boolean {
  const lower = path.toLowerCase();
  for (const prefix of list.prefixes) {
    if (prefix === '/' || lower === prefix || lower.startsWith(prefix + '/')) return true;
  }
  for (const rule of list.functions) {
    const result = rule(path, req);
    if (result === true) return true;
    if (result !== false) {
      // An async function (a Promise) or a truthy string would silently allow or deny: refuse the request loudly instead.
      throw new KeyFailoverError(
        'ERR_EKF_INVALID_OPTION',
        `${where}: a function in option "${name}" returned ${describeValue(result)}; it must return true or false.`,
      );
    }
  }
  return false;
}
