import descriptor from 'protobufjs/ext/descriptor/index.js';
import { reflectionClient } from './clients.js';

interface ReflectionResponse {
  list_services_response?: { service: { name: string }[] };
  file_descriptor_response?: { file_descriptor_proto: Buffer[] };
  error_response?: { error_code: number; error_message: string };
}

/** Asks the server's reflection service one question over a bidirectional stream. */
async function ask(port: number, request: Record<string, string>): Promise<ReflectionResponse> {
  const client = reflectionClient(port);
  try {
    return await new Promise<ReflectionResponse>((resolve, reject) => {
      const stream = (client.ServerReflectionInfo as () => NodeJS.ReadWriteStream & { end(): void; write(m: unknown): void })();
      stream.on('data', (response: ReflectionResponse) => {
        resolve(response);
        stream.end();
      });
      stream.on('error', reject);
      stream.write(request);
    });
  } finally {
    client.close();
  }
}

export async function listServices(port: number): Promise<string[]> {
  const response = await ask(port, { list_services: '' });
  return response.list_services_response!.service.map((s) => s.name).sort();
}

/** The method names of a service, read from the file descriptors reflection serves for it. */
export async function listMethods(port: number, service: string): Promise<string[]> {
  const response = await ask(port, { file_containing_symbol: service });
  if (!response.file_descriptor_response) throw new Error(`reflection error: ${JSON.stringify(response.error_response)}`);
  const shortName = service.split('.').pop();
  const FileDescriptorProto = (descriptor as unknown as { FileDescriptorProto: { decode(b: Uint8Array): unknown } }).FileDescriptorProto;
  for (const bytes of response.file_descriptor_response.file_descriptor_proto) {
    const file = FileDescriptorProto.decode(bytes) as { service?: { name: string; method: { name: string }[] }[] };
    const found = file.service?.find((s) => s.name === shortName);
    if (found) return found.method.map((m) => m.name).sort();
  }
  throw new Error(`service ${service} not in the served descriptors`);
}
