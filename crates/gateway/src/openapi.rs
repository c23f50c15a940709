//! The OpenAPI document, generated from the operation table.

use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Paths, Required, ResponseBuilder,
};

use crate::api::{schema, Op, OpKind, Schemas};
use crate::error::ApiError;
use crate::health::Health;

fn method(op: &Op) -> HttpMethod {
    match op.method.as_str() {
        "GET" => HttpMethod::Get,
        "POST" => HttpMethod::Post,
        "PUT" => HttpMethod::Put,
        "PATCH" => HttpMethod::Patch,
        "DELETE" => HttpMethod::Delete,
        other => unreachable!("unsupported method {other}"),
    }
}

fn json(schema: utoipa::openapi::RefOr<utoipa::openapi::Schema>) -> utoipa::openapi::Content {
    ContentBuilder::new().schema(Some(schema)).build()
}

pub fn document(ops: &[Op]) -> OpenApi {
    let mut schemas: Schemas = Vec::new();
    let error = schema::<ApiError>(&mut schemas);
    let error_response =
        |what: &str| ResponseBuilder::new().description(what).content("application/json", json(error.clone())).build();
    let mut paths = Paths::new();

    let health = schema::<Health>(&mut schemas);
    paths.add_path_operation(
        "/health",
        vec![HttpMethod::Get],
        OperationBuilder::new()
            .tag("platform")
            .summary(Some("Liveness and projection health (no token needed)"))
            .response(
                "200",
                ResponseBuilder::new()
                    .description("NATS connected")
                    .content("application/json", json(health.clone()))
                    .build(),
            )
            .response(
                "503",
                ResponseBuilder::new()
                    .description("NATS unreachable")
                    .content("application/json", json(health))
                    .build(),
            )
            .build(),
    );

    paths.add_path_operation(
        "/metrics",
        vec![HttpMethod::Get],
        OperationBuilder::new()
            .tag("platform")
            .summary(Some(
                "Requests, latency, projection lag, stream sizes, reactors, NATS reconnections and open \
                 reservations, in the Prometheus text format (no token needed)",
            ))
            .response(
                "200",
                ResponseBuilder::new()
                    .description("Prometheus text format 0.0.4")
                    .content(
                        "text/plain; version=0.0.4",
                        json(
                            utoipa::openapi::ObjectBuilder::new()
                                .schema_type(utoipa::openapi::schema::Type::String)
                                .into(),
                        ),
                    )
                    .build(),
            )
            .build(),
    );

    let replay = schema::<crate::health::Replay>(&mut schemas);
    let started = schema::<crate::health::ReplayStarted>(&mut schemas);
    paths.add_path_operation(
        "/api/replays",
        vec![HttpMethod::Post],
        OperationBuilder::new()
            .tag("platform")
            .summary(Some(
                "Rebuild a projection (or all) from the streams on every running node; /health shows the progress \
                 (admin)",
            ))
            .request_body(Some(RequestBodyBuilder::new().content("application/json", json(replay)).build()))
            .response(
                "202",
                ResponseBuilder::new().description("started").content("application/json", json(started)).build(),
            )
            .response("403", error_response("not a coordinator"))
            .response("404", error_response("projection_not_found"))
            .response("503", error_response("no_node"))
            .build(),
    );
    let me = schema::<crate::web::Me>(&mut schemas);
    paths.add_path_operation(
        "/api/me",
        vec![HttpMethod::Get],
        OperationBuilder::new()
            .tag("platform")
            .summary(Some("Who the bearer token is (role, scope, name): what the web app shows depends on it"))
            .response("200", ResponseBuilder::new().description("OK").content("application/json", json(me)).build())
            .response("401", error_response("unauthenticated"))
            .build(),
    );

    for op in ops {
        let mut b = OperationBuilder::new()
            .tag(op.service)
            .operation_id(Some(op.name))
            .summary(Some(op.summary))
            .description(Some(format!(
                "Who: {}. Service call `foodaid.{}.{}.{}`.",
                op.access.map_or_else(|| "not declared".to_owned(), |a| a.describe()),
                if op.kind == OpKind::Command { "cmd" } else { "qry" },
                op.service,
                op.name
            )))
            .security(SecurityRequirement::new("bearer", Vec::<String>::new()));
        for segment in op.path.split('/') {
            if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                b = b.parameter(
                    ParameterBuilder::new().name(name).parameter_in(ParameterIn::Path).required(Required::True),
                );
            }
        }
        let ok = (op.response)(&mut schemas);
        match op.kind {
            OpKind::Command => {
                if let Some(body) = op.body {
                    b = b.request_body(Some(
                        RequestBodyBuilder::new()
                            .content("application/json", json(body(&mut schemas)))
                            .required(Some(Required::True))
                            .build(),
                    ));
                }
                b = b.parameter(
                    ParameterBuilder::new().name("Idempotency-Key").parameter_in(ParameterIn::Header).description(
                        Some("resending a command with the same key commits it once and returns the first answer"),
                    ),
                );
                if let crate::api::Dated::DaysBack(days) = op.dated {
                    b = b.parameter(
                        ParameterBuilder::new().name("X-Occurred-At").parameter_in(ParameterIn::Header).description(
                            Some(format!(
                                "RFC 3339 time it happened, for what is recorded late: at most {days} days back"
                            )),
                        ),
                    );
                }
                b = b
                    .response(
                        if op.creates { "201" } else { "200" },
                        ResponseBuilder::new().description("committed").content("application/json", json(ok)).build(),
                    )
                    .response("409", error_response("conflicts with the current state"))
                    .response("422", error_response("invalid payload or refused by a rule"));
            }
            OpKind::Query => {
                for (name, description) in op.params {
                    b = b.parameter(
                        ParameterBuilder::new()
                            .name(*name)
                            .parameter_in(ParameterIn::Query)
                            .description(Some(*description)),
                    );
                }
                let answer = match op.render {
                    crate::api::Render::Json => {
                        ResponseBuilder::new().description("answer").content("application/json", json(ok))
                    }
                    crate::api::Render::Document { content_type, .. } => {
                        ResponseBuilder::new().description("the answer, rendered as a document").content(
                            content_type.split(';').next().unwrap_or(content_type),
                            json(utoipa::openapi::RefOr::T(utoipa::openapi::Schema::Object(
                                utoipa::openapi::ObjectBuilder::new()
                                    .schema_type(utoipa::openapi::schema::Type::String)
                                    .build(),
                            ))),
                        )
                    }
                };
                b = b
                    .parameter(ParameterBuilder::new().name("min_seq").parameter_in(ParameterIn::Query).description(Some("wait until the projection has recorded this commit: <seq> or <stream>:<seq> from a command's answer")))
                    .response("200", answer.build())
                    .response("404", error_response("not found"));
            }
        }
        b = b
            .response("400", error_response("malformed JSON or parameters"))
            .response("401", error_response("missing or unknown token"))
            .response("403", error_response("the token's role may not do this"))
            .response("503", error_response("service unavailable or projection lagging"));
        paths.add_path_operation(op.path, vec![method(op)], b.build());
    }

    schemas.sort_by(|a, b| a.0.cmp(&b.0));
    schemas.dedup_by(|a, b| a.0 == b.0);
    let components = ComponentsBuilder::new()
        .schemas_from_iter(schemas)
        .security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()))
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("foodaid")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some("Shared logistics of a collective of food-aid associations. Errors are {code, message} with stable codes."))
                .build(),
        )
        .paths(paths)
        .components(Some(components))
        .build()
}

#[cfg(test)]
mod tests {
    use crate::api::operations;

    fn who(doc: &serde_json::Value, path: &str, method: &str) -> String {
        let description = doc["paths"][path][method]["description"].as_str().unwrap_or_default();
        description.split(". Service call").next().unwrap_or_default().to_owned()
    }

    #[test]
    fn who_may_call_is_rendered_from_the_declaration() {
        let doc = serde_json::to_value(super::document(&operations())).unwrap();
        assert_eq!(who(&doc, "/api/donors", "post"), "Who: admin, warehouse");
        assert_eq!(who(&doc, "/api/products", "get"), "Who: any role");
        assert_eq!(
            who(&doc, "/api/households/{household_id}", "get"),
            "Who: admin, an association for its own (another's: 404 household_not_found)"
        );
        assert_eq!(
            who(&doc, "/api/routes/{route_id}/start", "post"),
            "Who: admin, a driver for their own (another's: 403 forbidden)"
        );
        assert_eq!(who(&doc, "/api/drivers", "get"), "Who: admin, a driver, reading their own only");
        assert_eq!(who(&doc, "/api/vehicles", "get"), "Who: admin, warehouse, any driver");
        for op in operations() {
            assert!(op.access.is_some(), "{} {} declares who may call it", op.method, op.path);
        }
    }
}
