//! whale-api: the wire types of every endpoint whaled serves, the Modelfile format, and an
//! async client. No llama.cpp, no axum: the CLI, the tests and the daemon all depend on it.
