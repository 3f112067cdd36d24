//! `GET /api/catalog`: the catalogue ([`crate::catalogue`]) with, for each entry, whether its
//! weights fit this machine's memory (as a pull's first check decides) and whether the store
//! has it.

use axum::extract::State;
use whale_api as api;

use super::ollama::{SharedState, this_machine};
use crate::catalogue;
use crate::model;

pub async fn list(State(state): SharedState) -> axum::Json<api::CatalogResponse> {
    let memory = this_machine(&state).await.memory();
    let models = catalogue::entries()
        .iter()
        .map(|entry| api::CatalogModel {
            name: entry.name.clone(),
            title: entry.title.clone(),
            source: entry.source.clone(),
            architecture: entry.architecture.clone(),
            parameter_size: entry.parameters.clone(),
            quantization_level: entry.quantization.clone(),
            size: entry.size,
            context_length: entry.context,
            license: entry.license.clone(),
            template: entry.template.clone(),
            draft: entry.draft.clone(),
            fits: entry.size <= memory,
            pulled: model::parse_name(&entry.name)
                .ok()
                .and_then(|reference| state.store.resolve(&reference))
                .is_some(),
        })
        .collect();
    axum::Json(api::CatalogResponse { models, memory })
}
