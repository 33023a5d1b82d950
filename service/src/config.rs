//! Loading a configuration tree (defaults, then a TOML file, then
//! prefixed environment variables) and the error that names the field a
//! value is refused for.

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a configuration cannot be used: it does not load (figment says
/// where), or a field's value is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(#[from] Box<figment::Error>),
    #[error("invalid value for `{field}`: {reason}")]
    Invalid { field: String, reason: String },
}

impl From<protocol::secret::SecretError> for ConfigError {
    fn from(error: protocol::secret::SecretError) -> ConfigError {
        invalid(&error.var, error.reason)
    }
}

/// `field`'s value is refused for `reason`.
pub fn invalid(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// `T::default()`, then `file` (if given; it must exist), then the
/// variables named `{prefix}SECTION__KEY`, except the `ignored` ones
/// (lowercase, without the prefix: secrets and other variables read
/// elsewhere). Unchecked beyond serde's shape.
pub fn load<T: Default + Serialize + DeserializeOwned>(
    file: Option<&Path>,
    prefix: &str,
    ignored: &[&str],
) -> Result<T, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(file) = file {
        figment = figment.merge(Toml::file_exact(file));
    }
    let vars = Env::prefixed(prefix).split("__").ignore(ignored);
    Ok(figment.merge(vars).extract().map_err(Box::new)?)
}
