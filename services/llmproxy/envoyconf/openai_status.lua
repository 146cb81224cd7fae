-- Sets the HTTP status of a transcoded response from the router's status header.
--
-- The gRPC-JSON transcoder answers 200 for every OK gRPC response, and for a non-OK status it
-- writes its own error body, not OpenAI's. So the router answers errors as OK responses whose
-- body is OpenAI's error JSON and names the HTTP status in this header; here it becomes real.
-- envoyconf sets STATUS_HEADER from llmproxy.common.contract before Envoy loads it.
local STATUS_HEADER = "x-llmproxy-status"
function envoy_on_response(response_handle)
  local headers = response_handle:headers()
  local status = headers:get(STATUS_HEADER)
  if status ~= nil then
    headers:replace(":status", status)
    headers:remove(STATUS_HEADER)
  end
end
