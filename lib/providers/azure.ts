/**
 * Azure OpenAI, as the `openai` package's `AzureOpenAI` class calls it:
 * `new AzureOpenAI({ endpoint, deployment, apiVersion })` sends
 * `POST {endpoint}/openai/deployments/{deployment}/chat/completions?api-version=...`
 * and `POST {endpoint}/openai/responses?api-version=...`, with its key in
 * `api-key`. The v1 API (`new OpenAI({ baseURL: '{endpoint}/openai/v1' })`)
 * is `/openai/v1/chat/completions` and `/openai/v1/responses`. The routes
 * start at the resource root, so the gateway's target is the endpoint itself
 * (`https://my-resource.openai.azure.com`), and the client's `endpoint` is
 * where the gateway mounts the middleware.
 */
export const AZURE_PRESET = {
  name: 'azure',
  authHeader: 'api-key',
  routes: ['/openai/deployments/:deployment/chat/completions', '/openai/responses', '/openai/v1/chat/completions', '/openai/v1/responses'],
} as const;

export const PRESETS = { azure: AZURE_PRESET } as const;
export type ProviderPreset = keyof typeof PRESETS;
