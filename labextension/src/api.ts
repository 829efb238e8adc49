/**
 * Calls to the jupyter-ft server extension (jupyter_ft/server/handlers.py). Requests go through
 * ServerConnection, which adds the server's token and XSRF header.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { IMetricRow, IRunSummary, ISchema } from './model';

export async function requestAPI<T>(endPoint: string, init: RequestInit = {}): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'jupyter-ft/api', endPoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ServerConnection.NetworkError(error as any);
  }
  let data: any = await response.text();
  if (data.length > 0) {
    try {
      data = JSON.parse(data);
    } catch (error) {
      console.warn('jupyter-ft: not a JSON response', response);
    }
  }
  if (!response.ok) {
    throw new ServerConnection.ResponseError(response, (data && data.message) || String(data));
  }
  return data as T;
}

export interface IRunsReply {
  run_root: string;
  runs: IRunSummary[];
}

export interface IMetricsReply {
  run_id: string;
  status: string;
  since: number | null;
  last_step: number | null;
  metrics: IMetricRow[];
}

export interface IStopReply {
  run_id: string;
  status: string;
  requested: boolean;
}

export const api = {
  runs: () => requestAPI<IRunsReply>('runs'),
  run: (id: string) => requestAPI<{ [key: string]: any }>(`runs/${encodeURIComponent(id)}`),
  metrics: (id: string, since: number | null) =>
    requestAPI<IMetricsReply>(
      `runs/${encodeURIComponent(id)}/metrics` + (since === null ? '' : `?since=${since}`)
    ),
  stop: (id: string) => requestAPI<IStopReply>(`runs/${encodeURIComponent(id)}/stop`, { method: 'POST' }),
  schema: () => requestAPI<ISchema>('schema')
};
