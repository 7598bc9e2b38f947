//! `wasmatic:eth/rpc` for components (handlers and components of any
//! world): the WIT's calls mapped onto [`chain::RunRpc`].

use super::{eth_rpc, HandlerState};

use wasmatic_chain::RpcError;

impl eth_rpc::Host for HandlerState {
    async fn chains(&mut self) -> wasmtime::Result<Vec<u64>> {
        Ok(self.rpc.chains().ids())
    }

    async fn call(
        &mut self,
        chain: u64,
        method: String,
        params: String,
    ) -> wasmtime::Result<Result<String, eth_rpc::RpcError>> {
        Ok(self
            .rpc
            .call(chain, &method, &params)
            .await
            .map(|value| value.to_string())
            .map_err(to_wit))
    }
}

fn to_wit(e: RpcError) -> eth_rpc::RpcError {
    use eth_rpc::RpcError as Wit;
    match e {
        RpcError::UnknownChain(chain) => Wit::UnknownChain(chain),
        RpcError::MethodNotAllowed(method) => Wit::MethodNotAllowed(method),
        RpcError::InvalidParams(why) => Wit::InvalidParams(why),
        RpcError::Node(e) => Wit::NodeError(eth_rpc::NodeError {
            code: e.code,
            message: e.message,
            data: e.data,
        }),
        RpcError::Timeout => Wit::Timeout,
        RpcError::TooLarge(max) => Wit::TooLarge(max),
        RpcError::TooManyCalls(max) => Wit::TooManyCalls(max),
        RpcError::Unavailable(why) => Wit::Unavailable(why),
    }
}
