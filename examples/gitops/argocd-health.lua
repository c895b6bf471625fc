-- Argo CD health check for amperity.dev/AmperityWorkflowRun.
-- Progressing while in flight, Suspended while stopping, Healthy on success,
-- Degraded on failure, cancel, timeout, or when a person must act (Stalled).
local hs = { status = "Progressing", message = "Waiting for the operator to pick up the run" }
if obj.status == nil then
  return hs
end
local function condition(kind)
  if obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end
if obj.metadata ~= nil and obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  hs.message = "Waiting for the operator to observe the latest change"
  return hs
end
local phase = obj.status.phase
local succeeded = condition("Succeeded")
local stalled = condition("Stalled")
if succeeded ~= nil then
  hs.message = succeeded.message
end
if phase == "Succeeded" then
  hs.status = "Healthy"
elseif phase == "Failed" or phase == "Canceled" or phase == "TimedOut" then
  hs.status = "Degraded"
elseif stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message
elseif phase == "Stopping" then
  hs.status = "Suspended"
else
  hs.status = "Progressing"
end
return hs
