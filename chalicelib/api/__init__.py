"""The API's own shapes: request/response models and the OpenAPI document built from them."""
