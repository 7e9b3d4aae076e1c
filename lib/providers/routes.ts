/**
 * The POST routes a provider intercepts. Most are exact strings, looked up
 * in a Set; a route may also name path parameters, whole segments written
 * `:name` (`/openai/deployments/:deployment/chat/completions`, what Azure's
 * `AzureOpenAI` class calls), matched segment by segment only when the exact
 * lookup missed. A parameter's value is the client's string: it must be a
 * plain segment (unreserved URL characters, not `.` or `..`), or the request
 * is not matched at all. The upstream path is then built from the route and
 * those checked values, never taken from the request line.
 */
import { KeyFailoverError, describeValue } from '../validations.js';

export interface RoutePattern {
  /** The route as written: `/openai/deployments/:deployment/chat/completions`. */
  readonly source: string;
  /** Each segment after the leading `/`: a literal, or a parameter's name. */
  readonly segments: readonly RouteSegment[];
}

type RouteSegment = { readonly literal: string } | { readonly param: string };

export interface RouteMatch {
  /** The path to send upstream (relative to the target), built from the route. */
  readonly path: string;
  /** The value of a `:deployment` or `:model` parameter: the request's model, for the pool's per-model cooldowns. */
  readonly model?: string;
}

export interface ProviderRoutes {
  /** The exact routes. */
  readonly routes: ReadonlySet<string>;
  /** The routes with path parameters, when there are any. */
  readonly routePatterns?: readonly RoutePattern[] | undefined;
}

/** Parameters whose value names the model (Azure: the deployment, its rate-limit unit). */
const MODEL_PARAMS = ['deployment', 'model'];
const PARAM_NAME = /^:[A-Za-z_][A-Za-z0-9_]*$/;
// Unreserved URL characters only: no percent-encoding (so no %2f, %2e), no slash or backslash, at most 128.
const PARAM_VALUE = /^[A-Za-z0-9._~-]{1,128}$/;
const ROUTE = /^\/[^?#\s]*$/;

/** The route matched by `path` (a request's path relative to the mount point), or undefined. */
export function matchRoute(provider: ProviderRoutes, path: string): RouteMatch | undefined {
  if (provider.routes.has(path)) return { path };
  const patterns = provider.routePatterns;
  if (patterns === undefined || patterns.length === 0) return undefined;
  const parts = path.split('/');
  for (const pattern of patterns) {
    const match = matchPattern(pattern, parts);
    if (match) return match;
  }
  return undefined;
}

function matchPattern(pattern: RoutePattern, parts: readonly string[]): RouteMatch | undefined {
  const { segments } = pattern;
  // parts[0] is the empty string before the leading slash.
  if (parts.length !== segments.length + 1) return undefined;
  const built: string[] = [''];
  let model: string | undefined;
  for (let i = 0; i < segments.length; i++) {
    const segment = segments[i]!;
    const part = parts[i + 1]!;
    if ('literal' in segment) {
      if (part !== segment.literal) return undefined;
      built.push(segment.literal);
    } else {
      if (!isSegmentValue(part)) return undefined;
      built.push(part);
      if (MODEL_PARAMS.includes(segment.param)) model = part;
    }
  }
  return model === undefined ? { path: built.join('/') } : { path: built.join('/'), model };
}

/** A parameter value that cannot be read as anything but one plain segment. */
export function isSegmentValue(value: string): boolean {
  return PARAM_VALUE.test(value) && value !== '.' && value !== '..';
}

/** Checks a `routes` option and splits it into exact routes and patterns. */
export function parseRoutes(where: string, value: unknown): { routes: Set<string>; routePatterns: RoutePattern[] } {
  if (!Array.isArray(value) || value.length === 0 || value.some((r) => typeof r !== 'string' || !ROUTE.test(r))) {
    throw new KeyFailoverError(
      'ERR_EKF_INVALID_OPTION',
      `${where}: option "routes" must be a non-empty array of paths starting with "/", got ${describeValue(value)}.`,
    );
  }
  const routes = new Set<string>();
  const routePatterns: RoutePattern[] = [];
  for (const route of value as string[]) {
    const parts = route.slice(1).split('/');
    if (!parts.some((part) => part.startsWith(':'))) {
      routes.add(route);
      continue;
    }
    const names = new Set<string>();
    const segments = parts.map((part): RouteSegment => {
      if (!part.startsWith(':')) return { literal: part };
      if (!PARAM_NAME.test(part) || names.has(part)) {
        throw new KeyFailoverError(
          'ERR_EKF_INVALID_OPTION',
          `${where}: option "routes" has ${JSON.stringify(route)}; a path parameter is a whole segment ":name" (letters, digits, _), each name once, such as "/openai/deployments/:deployment/chat/completions".`,
        );
      }
      names.add(part);
      return { param: part.slice(1) };
    });
    routePatterns.push({ source: route, segments });
  }
  return { routes, routePatterns };
}

/** Every route as written, exact ones and patterns. */
export function routeSources(provider: ProviderRoutes): string[] {
  return [...provider.routes, ...(provider.routePatterns ?? []).map((pattern) => pattern.source)];
}
