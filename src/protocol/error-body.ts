import { Type } from '@sinclair/typebox';

/** The JSON body of every non-2xx control-API reply (ErrorBody in errors.ts), as a schema for OpenAPI documents. */
export const ErrorBodySchema = Type.Object({
  error: Type.Object({
    code: Type.String(),
    message: Type.String(),
    field: Type.Optional(Type.String()),
    detail: Type.Optional(Type.Unknown()),
  }),
});
