-- Argo CD health check for amperity.dev/AmperityWorkflowSchedule.
-- Healthy while the schedule operates (a failed last run is said in the message,
-- not made Degraded: the next run may well succeed), Suspended while spec.suspend
-- is true, Degraded when the spec is invalid, runs cannot be created, or slots are
-- skipped behind a run that does not finish (Stalled/Blocked), and
-- Progressing until the operator has seen the latest spec.
local hs = { status = "Progressing", message = "Waiting for the operator to pick up the schedule" }
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
local ready = condition("Ready")
local stalled = condition("Stalled")
local last = condition("LastRunSucceeded")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message
  return hs
end
if ready == nil then
  return hs
end
if ready.status ~= "True" then
  hs.status = "Degraded"
  hs.message = ready.message
  return hs
end
if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
else
  hs.status = "Healthy"
end
hs.message = ready.message
if last ~= nil and last.status == "False" then
  hs.message = ready.message .. "; " .. last.message
end
return hs
